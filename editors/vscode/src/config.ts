// Settings → how to start the server and what to tell it. Pure: no `vscode` import, so it is unit-tested
// under plain Node.

/** The server's language names (its `languages` option), in the server's order. */
export const LANGUAGES = ['python', 'javascript', 'typescript', 'tsx', 'go', 'rust', 'java', 'c', 'cpp'] as const;

/** VS Code language ids for each server language (the server maps them back the same way). */
const LANGUAGE_IDS: Record<string, string[]> = {
  python: ['python'],
  javascript: ['javascript', 'javascriptreact'],
  typescript: ['typescript'],
  tsx: ['typescriptreact'],
  go: ['go'],
  rust: ['rust'],
  java: ['java'],
  c: ['c'],
  cpp: ['cpp'],
};

export const DEFAULT_PYTHON = 'python3';

/**
 * The `hindsight.*` settings the user set explicitly (from `WorkspaceConfiguration.inspect`), keyed by the
 * name after `hindsight.`. Values are as the user wrote them: nothing here is trusted to have the right type.
 */
export type UserSettings = Partial<Record<string, unknown>>;

export interface ServerCommand {
  command: string;
  args: string[];
}

/** `hindsight.serverCommand` when it is a non-empty list of strings, else `<pythonPath> -m hindsight serve`. */
export function serverCommand(user: UserSettings): ServerCommand {
  const override = user['serverCommand'];
  if (isStringList(override) && override.length > 0) {
    const [command, ...args] = override as [string, ...string[]];
    return { command, args };
  }
  const python = user['pythonPath'];
  const command = typeof python === 'string' && python.trim() !== '' ? python : DEFAULT_PYTHON;
  return { command, args: ['-m', 'hindsight', 'serve'] };
}

/** The settings the server is started with: changing one restarts it. (`enable` is the client's alone.) */
export const SERVER_SETTINGS = [
  'pythonPath',
  'serverCommand',
  'model',
  'modelName',
  'modelTemplate',
  'backend',
  'baseUrl',
  'apiKeyEnv',
  'context.prefixTokens',
  'context.crossFileTokens',
  'gate.threshold',
  'languages',
] as const;

/** Setting name → path in `initializationOptions`. Settings not listed here are for the client only. */
const OPTION_PATHS: Record<string, string[]> = {
  model: ['model', 'path'],
  modelName: ['model', 'name'],
  modelTemplate: ['model', 'template'],
  backend: ['backend'],
  baseUrl: ['baseUrl'],
  apiKeyEnv: ['apiKeyEnv'],
  languages: ['languages'],
  'context.prefixTokens': ['context', 'prefixTokens'],
  'context.crossFileTokens': ['context', 'contextTokens'],
  'gate.threshold': ['gate', 'threshold'],
};

/** The settings a user changed, as `initializationOptions`: everything else is left to the server's defaults. */
export function initializationOptions(user: UserSettings): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const [setting, path] of Object.entries(OPTION_PATHS)) {
    const value = user[setting];
    if (value === undefined) continue;
    let node = options;
    for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
    // Sent as written: the server checks types and says what it ignored (window/showMessage).
    node[path[path.length - 1]!] = value;
  }
  return options;
}

/** The server languages completion is on for: the user's list (unknown names dropped) or all of them. */
export function enabledLanguages(user: UserSettings): string[] {
  const chosen = user['languages'];
  return isStringList(chosen) ? chosen.filter((l) => l in LANGUAGE_IDS) : [...LANGUAGES];
}

/** VS Code language ids for the given server languages. */
export function languageIds(languages: readonly string[]): string[] {
  return languages.flatMap((l) => LANGUAGE_IDS[l] ?? []);
}

/** The documents the server gets (and completes): saved and untitled files in the enabled languages. */
export function documentFilters(user: UserSettings): { scheme: string; language: string }[] {
  return languageIds(enabledLanguages(user)).flatMap((language) => [
    { scheme: 'file', language },
    { scheme: 'untitled', language },
  ]);
}

function isStringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}
