import * as readline from 'node:readline';
import type { Readable } from 'node:stream';
import type { LogOutputChannel } from 'vscode';
import {
  CloseAction,
  type DynamicFeature,
  ErrorAction,
  type ErrorHandler,
  ExecuteCommandRequest,
  InlineCompletionRequest,
  LanguageClient,
  State,
  type StaticFeature,
} from 'vscode-languageclient/node';
import { documentFilters, initializationOptions, serverCommand, type UserSettings } from './config';

const MAX_RESTARTS = 4; // after a crash, in RESTART_WINDOW_MS, as the client's default handler does
const RESTART_WINDOW_MS = 3 * 60_000;
const STDERR_LINES = 50;

/**
 * The language client, less two built-in features the extension does itself:
 * - inline completion: VS Code reads the show/partial-accept/end-of-life hooks off the provider object
 *   when it is registered, and the built-in provider has none (its middleware only wraps the request);
 * - workspace/executeCommand: it registers a VS Code command for each server command
 *   (hindsight.accept, hindsight.status, hindsight.reload), and `hindsight.reload` is also our own palette
 *   command; VS Code refuses a second registration and the client would fail to start.
 * The built-in features are registered from the base constructor, which already dispatches here.
 *
 * Its errors go to the output channel only: the extension tells the user once, with the server's own
 * reason (`stderr`), where the client would show its own notifications ("couldn't create connection to
 * server", "Connection to server got closed", …), several for one failure.
 */
export class HindsightClient extends LanguageClient {
  readonly stderr = new ServerStderr();

  override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    const method = 'registrationType' in feature ? feature.registrationType.method : undefined;
    if (method === InlineCompletionRequest.method || method === ExecuteCommandRequest.method) return;
    super.registerFeature(feature);
  }

  override error(message: string, data?: unknown): void {
    super.error(message, data, false);
  }
}

/** The last lines the server wrote to stderr (where it says why it stopped), also logged to the output channel. */
export class ServerStderr {
  private lines: string[] = [];
  private open = 0;
  private waiting: (() => void)[] = [];

  pipe(input: Readable, channel: LogOutputChannel): void {
    this.open++;
    const lines = readline.createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 });
    lines.on('line', (line) => {
      channel.error(line);
      if (line.trim()) this.lines = [...this.lines, line].slice(-STDERR_LINES);
    });
    lines.on('close', () => {
      if (--this.open === 0) for (const done of this.waiting.splice(0)) done();
    });
  }

  /** The server's last word: its last line on stderr, once the stream has closed (or after `ms`). */
  async reason(ms: number): Promise<string | undefined> {
    if (this.open > 0) {
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        setTimeout(resolve, ms);
      });
    }
    return this.lines.at(-1)?.trim();
  }
}

/**
 * Restarts a server that crashed while it ran (at most MAX_RESTARTS times in RESTART_WINDOW_MS, as the
 * client's default does) and none that never ran: that one would fail again. Gives no messages: the
 * extension says what went wrong (`running()` tells whether this launch reached Running).
 */
function errorHandler(running: () => boolean): ErrorHandler {
  let restarts: number[] = [];
  return {
    error: (_error, _message, count) => ({ action: count && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true }),
    closed: () => {
      const now = Date.now();
      restarts = [...restarts.filter((t) => now - t < RESTART_WINDOW_MS), now];
      const restart = running() && restarts.length <= MAX_RESTARTS;
      return { action: restart ? CloseAction.Restart : CloseAction.DoNotRestart, handled: true };
    },
  };
}

export function createClient(user: UserSettings): HindsightClient {
  const { command, args } = serverCommand(user);
  let ran = false;
  const client: HindsightClient = new HindsightClient(
    'hindsight',
    'Hindsight',
    { command, args },
    {
      documentSelector: documentFilters(user),
      initializationOptions: initializationOptions(user),
      errorHandler: errorHandler(() => ran),
      initializationFailedHandler: () => false,
      stdioOptions: {
        stdout: (input, channel) => // only for transports other than stdio (ours): the server's own output
          readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', (line) => channel.info(line)),
        stderr: (input, channel) => client.stderr.pipe(input, channel),
      },
    },
  );
  client.onDidChangeState(({ newState }) => {
    if (newState === State.Running) ran = true;
  });
  return client;
}
