// A small fake of the `vscode` module, installed under that name before the extension code is required.
// It implements what the extension and vscode-languageclient use, with VS Code's behaviour where the tests
// depend on it (duplicate commands throw; a provider with proposed hooks throws unless the proposal is on).
// Anything else the language client touches comes from a stub that does nothing.
import Module = require('node:module');
import * as fs from 'node:fs';
import * as path from 'node:path';

type Listener<T> = (e: T) => unknown;

export class Disposable {
  static from(...items: { dispose(): unknown }[]): Disposable {
    return new Disposable(() => items.forEach((i) => i.dispose()));
  }
  constructor(private readonly onDispose: () => unknown = () => undefined) {}
  dispose(): void {
    this.onDispose();
  }
}

export class EventEmitter<T> {
  private listeners = new Set<Listener<T>>();
  event = (listener: Listener<T>, thisArg?: unknown, disposables?: Disposable[]): Disposable => {
    const bound: Listener<T> = (e) => listener.call(thisArg, e);
    this.listeners.add(bound);
    const d = new Disposable(() => this.listeners.delete(bound));
    disposables?.push(d);
    return d;
  };
  fire(e: T): void {
    for (const l of [...this.listeners]) l(e);
  }
  dispose(): void {
    this.listeners.clear();
  }
}

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(a: Position | number, b: Position | number, c?: number, d?: number) {
    this.start = typeof a === 'number' ? new Position(a, b as number) : a;
    this.end = typeof a === 'number' ? new Position(c!, d!) : (b as Position);
  }
  get isEmpty(): boolean {
    return this.start.line === this.end.line && this.start.character === this.end.character;
  }
}

export class Selection extends Range {
  constructor(
    readonly anchor: Position,
    readonly active: Position,
  ) {
    super(anchor, active);
  }
}

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly path: string,
  ) {}
  static parse(value: string): Uri {
    const [scheme, rest] = value.split(':', 2);
    return new Uri(scheme!, (rest ?? '').replace(/^\/\//, ''));
  }
  static file(p: string): Uri {
    return new Uri('file', p);
  }
  get fsPath(): string {
    return this.path;
  }
  toString(): string {
    return `${this.scheme}://${this.path}`;
  }
}

export class InlineCompletionItem {
  constructor(
    public insertText: string,
    public range?: Range,
    public command?: { title: string; command: string; arguments?: unknown[] },
  ) {}
}

export class InlineCompletionList {
  constructor(public items: InlineCompletionItem[]) {}
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class CancellationError extends Error {}

export const StatusBarAlignment = { Left: 1, Right: 2 };
export const ConfigurationTarget = { Global: 1, Workspace: 2, WorkspaceFolder: 3 };
export const InlineCompletionTriggerKind = { Invoke: 0, Automatic: 1 };
export const LogLevel = { Off: 0, Trace: 1, Debug: 2, Info: 3, Warning: 4, Error: 5 };

export interface FakeStatusBarItem {
  text: string;
  tooltip: string | undefined;
  command: string | undefined;
  backgroundColor: ThemeColor | undefined;
  visible: boolean;
}

export interface Registration {
  selector: unknown;
  provider: Record<string, (...args: unknown[]) => unknown>;
}

/** Default values of the `hindsight.*` settings, read from package.json like VS Code does. */
const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const defaults: Record<string, unknown> = Object.fromEntries(
  Object.entries(manifest.contributes.configuration.properties as Record<string, { default: unknown }>).map(([k, v]) => [k, v.default]),
);

function freshState() {
  return {
    commands: new Map<string, (...args: unknown[]) => unknown>(),
    executed: [] as { command: string; args: unknown[] }[],
    statusBarItems: [] as FakeStatusBarItem[],
    messages: [] as string[],
    output: new Map<string, string[]>(),
    providers: [] as Registration[],
    global: {} as Record<string, unknown>,
    workspace: {} as Record<string, unknown>,
    /** Whether `inlineCompletionsAdditions` is enabled for the extension (`--enable-proposed-api`). */
    proposedApi: false,
  };
}

export let state = freshState();

const onDidChangeConfiguration = new EventEmitter<{ affectsConfiguration(section: string): boolean }>();
const onDidChangeTextDocument = new EventEmitter<unknown>();
const onDidChangeTextEditorSelection = new EventEmitter<unknown>();
const onDidChangeActiveTextEditor = new EventEmitter<unknown>();

/** Changes a setting as the user would (`Global` or `Workspace` scope) and fires the change event. */
export function setSetting(key: string, value: unknown, scope: 'global' | 'workspace' = 'global'): void {
  const values = scope === 'global' ? state.global : state.workspace;
  if (value === undefined) delete values[key];
  else values[key] = value;
  onDidChangeConfiguration.fire({ affectsConfiguration: (s) => key === s || key.startsWith(`${s}.`) });
}

export const events = { onDidChangeTextDocument, onDidChangeTextEditorSelection, onDidChangeActiveTextEditor };

export function reset(): void {
  state = freshState();
}

function configuration(section: string) {
  const full = (key: string) => (section ? `${section}.${key}` : key);
  const inspect = (key: string) => ({
    key: full(key),
    defaultValue: defaults[full(key)],
    globalValue: state.global[full(key)],
    workspaceValue: state.workspace[full(key)],
    workspaceFolderValue: undefined,
  });
  return {
    get: (key: string, fallback?: unknown) => {
      const i = inspect(key);
      return i.workspaceValue ?? i.globalValue ?? i.defaultValue ?? fallback;
    },
    has: (key: string) => full(key) in defaults,
    inspect,
    update: async (key: string, value: unknown, target: number) =>
      setSetting(full(key), value, target === ConfigurationTarget.Global ? 'global' : 'workspace'),
  };
}

function outputChannel(name: string) {
  const lines: string[] = [];
  state.output.set(name, lines);
  const log = (line: string) => void lines.push(line);
  return {
    name,
    logLevel: LogLevel.Info,
    onDidChangeLogLevel: new EventEmitter<number>().event,
    append: log,
    appendLine: log,
    replace: (text: string) => lines.splice(0, lines.length, text),
    clear: () => void lines.splice(0),
    show: () => undefined,
    hide: () => undefined,
    dispose: () => undefined,
    trace: log,
    debug: log,
    info: log,
    warn: log,
    error: (e: unknown) => log(String(e)),
  };
}

const message = async (text: string) => {
  state.messages.push(text);
  return undefined;
};

/** Stands in for everything the fake does not implement: callable, constructible, and hands back itself. */
const stub: unknown = new Proxy(function () {}, {
  get: (_t, key) => (key === 'then' ? undefined : key === 'dispose' ? () => undefined : stub),
  apply: () => stub,
  construct: () => stub as object,
});

function withStub<T extends object>(target: T): T {
  return new Proxy(target, { get: (t, key) => (key in t ? t[key as keyof T] : stub) });
}

export const vscode = withStub({
  version: '1.91.0',
  Disposable,
  EventEmitter,
  Position,
  Range,
  Selection,
  Uri,
  InlineCompletionItem,
  InlineCompletionList,
  ThemeColor,
  CancellationError,
  StatusBarAlignment,
  ConfigurationTarget,
  InlineCompletionTriggerKind,
  LogLevel,
  commands: withStub({
    registerCommand(command: string, callback: (...args: unknown[]) => unknown) {
      if (state.commands.has(command)) throw new Error(`command '${command}' already exists`);
      state.commands.set(command, callback);
      return new Disposable(() => state.commands.delete(command));
    },
    async executeCommand(command: string, ...args: unknown[]) {
      state.executed.push({ command, args });
      return state.commands.get(command)?.(...args);
    },
  }),
  window: withStub({
    createStatusBarItem(): FakeStatusBarItem {
      const item = {
        text: '',
        tooltip: undefined,
        command: undefined,
        backgroundColor: undefined,
        visible: false,
        name: '',
        show: () => void (item.visible = true),
        hide: () => void (item.visible = false),
        dispose: () => undefined,
      };
      state.statusBarItems.push(item);
      return item;
    },
    createOutputChannel: outputChannel,
    showInformationMessage: message,
    showWarningMessage: message,
    showErrorMessage: message,
    onDidChangeTextEditorSelection: onDidChangeTextEditorSelection.event,
    onDidChangeActiveTextEditor: onDidChangeActiveTextEditor.event,
    activeTextEditor: undefined,
    visibleTextEditors: [],
  }),
  workspace: withStub({
    getConfiguration: configuration,
    onDidChangeConfiguration: onDidChangeConfiguration.event,
    onDidChangeTextDocument: onDidChangeTextDocument.event,
    textDocuments: [],
    workspaceFolders: undefined,
  }),
  languages: withStub({
    match(selector: { scheme?: string; language?: string }[], doc: { uri: Uri; languageId: string }) {
      return selector.some((f) => (!f.scheme || f.scheme === doc.uri.scheme) && (!f.language || f.language === doc.languageId)) ? 10 : 0;
    },
    registerInlineCompletionItemProvider(selector: unknown, provider: Registration['provider']) {
      // extHost.api.impl.ts: hooks need the proposal.
      if (!state.proposedApi && (provider['handleDidShowCompletionItem'] || provider['handleDidPartiallyAcceptCompletionItem'])) {
        throw new Error("Extension 'hindsight.hindsight' CANNOT use API proposal: inlineCompletionsAdditions.");
      }
      const registration = { selector, provider };
      state.providers.push(registration);
      return new Disposable(() => state.providers.splice(state.providers.indexOf(registration), 1));
    },
  }),
  env: withStub({ language: 'en', appName: 'Fake Code', machineId: 'test' }),
});

// Route `require('vscode')` to the fake for everything loaded from now on.
const moduleWithLoad = Module as unknown as { _load(request: string, ...rest: unknown[]): unknown };
const load = moduleWithLoad._load;
moduleWithLoad._load = function (request: string, ...rest: unknown[]) {
  return request === 'vscode' ? vscode : load.call(this, request, ...rest);
};
