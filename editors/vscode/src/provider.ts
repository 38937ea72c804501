import * as vscode from 'vscode';
import { InlineCompletionRequest, type BaseLanguageClient } from 'vscode-languageclient/node';
import type { EndOfLife, SuggestionTracker } from './suggestions';

type Result = vscode.InlineCompletionItem[] | vscode.InlineCompletionList;

/**
 * The hooks of the proposed API `inlineCompletionsAdditions` (vscode.proposed.inlineCompletionsAdditions.d.ts),
 * typed here because @types/vscode has only the stable API. VS Code calls them only when the proposal is
 * enabled for this extension (`code --enable-proposed-api hindsight.hindsight`).
 */
interface ProposedHooks {
  handleDidShowCompletionItem(item: vscode.InlineCompletionItem, updatedInsertText: string): void;
  // Called twice per partial accept: with a number (old signature), then with PartialAcceptInfo.
  handleDidPartiallyAcceptCompletionItem(item: vscode.InlineCompletionItem, info: number | { acceptedLength: number }): void;
  handleEndOfLifetime(item: vscode.InlineCompletionItem, reason: ProposedEndOfLifeReason): void;
  handleListEndOfLifetime(list: vscode.InlineCompletionList, reason: unknown): void;
}

/** InlineCompletionEndOfLifeReason: kind 0 = Accepted, 1 = Rejected (explicitly, e.g. Escape), 2 = Ignored. */
interface ProposedEndOfLifeReason {
  kind: number;
  supersededBy?: vscode.InlineCompletionItem;
  userTypingDisagreed?: boolean;
}

/** The suggestion id the server put in the item's `hindsight.accept` command. */
export function suggestionId(item: vscode.InlineCompletionItem): string | undefined {
  const arg: unknown = item.command?.command === 'hindsight.accept' ? item.command.arguments?.[0] : undefined;
  const id = typeof arg === 'object' && arg !== null ? (arg as { id?: unknown }).id : undefined;
  return typeof id === 'string' ? id : undefined;
}

export interface ProviderDeps {
  client(): BaseLanguageClient | undefined;
  enabled(): boolean;
  tracker: SuggestionTracker;
}

/** Asks the server for inline completions while completions are on and the server runs. */
export async function provide(
  deps: ProviderDeps,
  document: vscode.TextDocument,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
  token: vscode.CancellationToken,
): Promise<Result | undefined> {
  const client = deps.client();
  if (!deps.enabled() || !client?.isRunning()) return undefined;
  const params = client.code2ProtocolConverter.asInlineCompletionParams(document, position, context);
  let result: Result | undefined;
  try {
    const answer = await client.sendRequest(InlineCompletionRequest.type, params, token);
    result = await client.protocol2CodeConverter.asInlineCompletionResult(answer, token);
  } catch (error) {
    return client.handleFailedRequest(InlineCompletionRequest.type, token, error, undefined);
  }
  // A null answer (language off, error, cancelled on the server) is no new result: nothing is superseded.
  if (result === undefined || token.isCancellationRequested) return undefined;
  const items = Array.isArray(result) ? result : result.items;
  // Items that continue the suggest widget's selected item replace the word typed so far: they start there.
  const range = items[0]?.range;
  const lead = range !== undefined && range.start.line === position.line && range.start.character < position.character;
  const start = lead ? range.start : position;
  deps.tracker.served(
    document.uri.toString(),
    { line: start.line, character: start.character },
    items.flatMap((item) => {
      const id = suggestionId(item);
      return id !== undefined && typeof item.insertText === 'string' ? [{ id, insertText: item.insertText }] : [];
    }),
    lead ? document.lineAt(position.line).text.slice(start.character, position.character) : '',
  );
  return result;
}

function hooks(tracker: SuggestionTracker): ProposedHooks {
  const withId = (item: vscode.InlineCompletionItem, f: (id: string) => void) => {
    const id = suggestionId(item);
    if (id !== undefined) f(id);
  };
  return {
    handleDidShowCompletionItem: (item) => withId(item, (id) => tracker.shown(id)),
    handleDidPartiallyAcceptCompletionItem: (item, info) =>
      withId(item, (id) => tracker.partiallyAccepted(id, typeof info === 'number' ? info : info.acceptedLength)),
    handleEndOfLifetime: (item, reason) => withId(item, (id) => tracker.endOfLifetime(id, endOfLife(reason))),
    handleListEndOfLifetime: (list) =>
      tracker.listEnded(list.items.map(suggestionId).filter((id): id is string => id !== undefined)),
  };
}

function endOfLife(reason: ProposedEndOfLifeReason): EndOfLife {
  if (reason.kind === 0) return { kind: 'accepted' };
  if (reason.kind === 1) return { kind: 'rejected' };
  return { kind: 'ignored', superseded: reason.supersededBy !== undefined, userTypingDisagreed: reason.userTypingDisagreed === true };
}

/**
 * Registers the provider with the proposed hooks when VS Code allows them, else without. Stable VS Code
 * throws on registering a provider that has handleDidShowCompletionItem unless the proposal is enabled
 * (checkProposedApiEnabled in extHost.api.impl.ts), which is how we learn which path is live.
 */
export function registerProvider(
  selector: vscode.DocumentSelector,
  deps: ProviderDeps,
): { disposable: vscode.Disposable; hooks: boolean } {
  const provider: vscode.InlineCompletionItemProvider = {
    provideInlineCompletionItems: (document, position, context, token) => provide(deps, document, position, context, token),
  };
  try {
    const withHooks = { ...provider, ...hooks(deps.tracker) };
    return { disposable: vscode.languages.registerInlineCompletionItemProvider(selector, withHooks), hooks: true };
  } catch {
    return { disposable: vscode.languages.registerInlineCompletionItemProvider(selector, provider), hooks: false };
  }
}
