import type { ChildProcess } from 'node:child_process';
import * as vscode from 'vscode';
import { ExecuteCommandRequest, State } from 'vscode-languageclient/node';
import { createClient, type HindsightClient } from './client';
import { documentFilters, SERVER_SETTINGS, type UserSettings } from './config';
import { registerProvider } from './provider';
import { barState, reloadMessage, statsReport, type ServerStatus } from './statusView';
import { DID_REJECT, SuggestionTracker } from './suggestions';

const REFRESH_MS = 30_000;
const REFRESH_AFTER_OUTCOME_MS = 1_000; // lets the server record the outcome first
const EXIT_WAIT_MS = 3_000; // the client kills a server still running 2 s after stop()
const STDERR_WAIT_MS = 1_000; // for the last words of a server that failed

/** Owns the client, the inline completion provider, the commands and the status bar. */
class Hindsight implements vscode.Disposable {
  private client: HindsightClient | undefined;
  private provider: vscode.Disposable | undefined;
  private hooks = false;
  private status: ServerStatus | undefined;
  private readonly told = new WeakSet<HindsightClient>(); // clients whose failure the user has been told of
  /** The document last typed in while the server was not running: VS Code asks again only at the next key. */
  private typedBeforeRunning: string | undefined;
  private serverError: string | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private lifecycle: Promise<void> = Promise.resolve();
  private readonly tracker = new SuggestionTracker(
    (method, params) => this.notify(method, params),
    () => this.hooks,
  );
  private readonly bar = vscode.window.createStatusBarItem('hindsight.status', vscode.StatusBarAlignment.Right, 100);
  private readonly statsChannel = vscode.window.createOutputChannel('Hindsight Statistics');
  private readonly disposables: vscode.Disposable[] = [this.bar, this.statsChannel];
  private readonly interval = setInterval(() => void this.refresh(), REFRESH_MS);

  constructor() {
    this.bar.name = 'Hindsight';
    this.bar.command = 'hindsight.showStats';
    this.disposables.push(
      vscode.commands.registerCommand('hindsight.accept', (arg: unknown) => this.accept(arg)),
      vscode.commands.registerCommand('hindsight.dismiss', () => this.dismiss()),
      vscode.commands.registerCommand('hindsight.toggle', () => this.toggle()),
      vscode.commands.registerCommand('hindsight.reload', () => this.reload()),
      vscode.commands.registerCommand('hindsight.showStats', () => this.showStats()),
      vscode.workspace.onDidChangeTextDocument((e) => {
        this.tracker.documentChanged(e.document.uri.toString(), e.contentChanges);
        if (e.contentChanges.length > 0 && !this.client?.isRunning()) this.typedBeforeRunning = e.document.uri.toString();
      }),
      vscode.window.onDidChangeTextEditorSelection((e) => {
        const [first] = e.selections;
        if (first) this.tracker.cursorMoved(e.textEditor.document.uri.toString(), first.active, e.selections.length === 1 && first.isEmpty);
      }),
      vscode.window.onDidChangeActiveTextEditor((editor) => this.tracker.editorChanged(editor?.document.uri.toString())),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (SERVER_SETTINGS.some((key) => e.affectsConfiguration(`hindsight.${key}`))) void this.restart();
        else if (e.affectsConfiguration('hindsight.enable')) this.render();
      }),
    );
    this.render();
    this.bar.show();
  }

  // Start, stop and restart run one after another: a language client can't be stopped while it starts.
  start(): Promise<void> {
    return this.queue(() => this.launch());
  }

  stop(): Promise<void> {
    return this.queue(() => this.halt());
  }

  restart(): Promise<void> {
    return this.queue(async () => {
      await this.halt();
      await this.launch();
    });
  }

  private queue(step: () => Promise<void>): Promise<void> {
    this.lifecycle = this.lifecycle.then(step);
    return this.lifecycle;
  }

  /** Starts the server and registers the provider; a failure shows in the status bar. */
  private async launch(): Promise<void> {
    const user = userSettings();
    const client = createClient(user);
    this.client = client;
    let starting = true;
    client.onDidChangeState(({ newState }) => {
      if (client !== this.client) return; // a client being replaced by restart()
      this.serverError = undefined;
      if (newState === State.Running) {
        this.askAgain();
        void this.refresh();
      } else this.render();
      // A failed start is told where start() fails; a server that stopped, once the client gives up on it.
      if (newState === State.Stopped && !starting) void this.failed(client, 'stopped', 'it stopped');
    });
    const registration = registerProvider(documentFilters(user), {
      client: () => this.client,
      enabled: () => enabled(),
      tracker: this.tracker,
    });
    this.provider = registration.disposable;
    this.hooks = registration.hooks;
    try {
      await client.start();
    } catch (error) {
      await this.failed(client, 'could not start', message(error));
    } finally {
      starting = false;
    }
  }

  /**
   * Tells the user, once, that the server of `client` failed, in the server's own words when it left any on
   * stderr (else `fallback`), and shows it in the status bar. A server the client restarts is not failed.
   */
  private async failed(client: HindsightClient, what: 'stopped' | 'could not start', fallback: string): Promise<void> {
    const reason = (await client.stderr.reason(STDERR_WAIT_MS)) ?? fallback;
    const down = client.state === State.Stopped || client.state === State.StartFailed;
    if (client !== this.client || !down || this.told.has(client)) return;
    this.told.add(client);
    this.serverError = `${reason} (Hindsight: Reload starts it again)`;
    this.render();
    const choice = await vscode.window.showErrorMessage(`Hindsight: the server ${what}: ${reason}`, 'Show Output', 'Reload');
    if (choice === 'Show Output') client.outputChannel.show(true);
    else if (choice === 'Reload') await this.reload();
  }

  /** Asks for a suggestion where the user typed while the server was starting (they are waiting for one). */
  private askAgain(): void {
    const uri = this.typedBeforeRunning;
    this.typedBeforeRunning = undefined;
    const editor = vscode.window.activeTextEditor;
    if (uri !== undefined && enabled() && editor?.document.uri.toString() === uri) {
      void vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
    }
  }

  private async halt(): Promise<void> {
    this.provider?.dispose();
    this.provider = undefined;
    const client = this.client;
    this.client = undefined;
    this.status = undefined;
    const server = client?.serverProcess; // the client forgets it once the connection closes
    // Stopping a client that failed to start throws, and one whose server does not shut down in time is
    // killed by the client: either way there is nothing left to stop.
    await client?.stop().catch(() => undefined);
    // stop() resolves when the server has answered `shutdown`, before it exits; its last writes (log,
    // database) come after. A restart or a deactivation waits for them.
    if (server) await exited(server, EXIT_WAIT_MS);
  }

  dispose(): void {
    clearInterval(this.interval);
    clearTimeout(this.refreshTimer);
    for (const d of this.disposables) d.dispose();
  }

  /** Runs a server command; undefined (and the error shown in the status bar) when the server can't. */
  private async execute(command: string, args: unknown[] = []): Promise<unknown> {
    const client = this.client;
    if (!client?.isRunning()) return undefined;
    try {
      return await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
    } catch (error) {
      this.serverError = message(error);
      this.render();
      return undefined;
    }
  }

  private notify(method: string, params: Record<string, unknown>): void {
    if (!this.client?.isRunning()) return;
    this.client.sendNotification(method, params).catch(() => undefined); // a dying server: nothing to tell
    if (method === DID_REJECT) this.refreshSoon();
  }

  /** The inline item's command: VS Code runs it after inserting the suggestion. */
  private async accept(arg: unknown): Promise<void> {
    const id = typeof arg === 'object' && arg !== null ? (arg as { id?: unknown }).id : undefined;
    if (typeof id === 'string') this.tracker.accepted(id);
    await this.execute('hindsight.accept', [arg]);
    this.refreshSoon();
  }

  /** Escape while an inline suggestion is visible (our keybinding): hide it, as Escape does, and report it. */
  private async dismiss(): Promise<void> {
    this.tracker.dismissed();
    await vscode.commands.executeCommand('editor.action.inlineSuggest.hide');
  }

  private async toggle(): Promise<void> {
    const config = vscode.workspace.getConfiguration('hindsight');
    const inWorkspace = config.inspect<boolean>('enable')?.workspaceValue !== undefined;
    // The configuration listener re-renders the status bar.
    await config.update('enable', !enabled(), inWorkspace ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global);
  }

  /** Re-reads the model on a running server; starts the server again when it is not running. */
  private async reload(): Promise<void> {
    if (!this.client?.isRunning()) {
      await this.restart();
      return;
    }
    const status = await this.execute('hindsight.reload');
    if (isStatus(status)) {
      this.status = status;
      this.render();
      const { level, text } = reloadMessage(status);
      if (level === 'error') void vscode.window.showErrorMessage(text);
      else if (level === 'warning') void vscode.window.showWarningMessage(text);
      else void vscode.window.showInformationMessage(text);
    }
  }

  private async showStats(): Promise<void> {
    await this.refresh();
    this.statsChannel.clear();
    this.statsChannel.appendLine(this.status ? statsReport(this.status) : `Hindsight server not running: ${this.serverError ?? 'starting'}`);
    this.statsChannel.show(true);
  }

  private refreshSoon(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refresh(), REFRESH_AFTER_OUTCOME_MS);
  }

  private async refresh(): Promise<void> {
    const status = await this.execute('hindsight.status');
    if (isStatus(status)) {
      this.status = status;
      this.serverError = undefined;
    }
    this.render();
  }

  private render(): void {
    const state = barState({ enabled: enabled(), status: this.status, serverError: this.serverError });
    this.bar.text = state.text;
    this.bar.tooltip = state.tooltip;
    this.bar.backgroundColor = state.kind === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  }
}

/** The `hindsight.*` server settings the user set (in any scope), so the server's defaults apply to the rest. */
function userSettings(): UserSettings {
  const config = vscode.workspace.getConfiguration('hindsight');
  const user: UserSettings = {};
  for (const key of SERVER_SETTINGS) {
    const set = config.inspect(key);
    const value = set?.workspaceFolderValue ?? set?.workspaceValue ?? set?.globalValue;
    if (value !== undefined) user[key] = value;
  }
  return user;
}

function enabled(): boolean {
  return vscode.workspace.getConfiguration('hindsight').get<boolean>('enable', true);
}

function isStatus(value: unknown): value is ServerStatus {
  return typeof value === 'object' && value !== null && 'modelLoaded' in value;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Resolves once `child` has exited, or after `ms`. */
function exited(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

let hindsight: Hindsight | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  hindsight = new Hindsight();
  context.subscriptions.push(hindsight);
  await hindsight.start();
}

export async function deactivate(): Promise<void> {
  await hindsight?.stop();
  hindsight = undefined;
}
