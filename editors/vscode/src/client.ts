import {
  type DynamicFeature,
  ExecuteCommandRequest,
  InlineCompletionRequest,
  LanguageClient,
  type StaticFeature,
} from 'vscode-languageclient/node';
import { documentFilters, initializationOptions, serverCommand, type UserSettings } from './config';

/**
 * The language client, less two built-in features the extension does itself:
 * - inline completion: VS Code reads the show/partial-accept/end-of-life hooks off the provider object
 *   when it is registered, and the built-in provider has none (its middleware only wraps the request);
 * - workspace/executeCommand: it registers a VS Code command for each server command
 *   (hindsight.accept, hindsight.status, hindsight.reload), and `hindsight.reload` is also our own palette
 *   command; VS Code refuses a second registration and the client would fail to start.
 * The built-in features are registered from the base constructor, which already dispatches here.
 */
export class HindsightClient extends LanguageClient {
  override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    const method = 'registrationType' in feature ? feature.registrationType.method : undefined;
    if (method === InlineCompletionRequest.method || method === ExecuteCommandRequest.method) return;
    super.registerFeature(feature);
  }
}

export function createClient(user: UserSettings): HindsightClient {
  const { command, args } = serverCommand(user);
  return new HindsightClient(
    'hindsight',
    'Hindsight',
    { command, args },
    { documentSelector: documentFilters(user), initializationOptions: initializationOptions(user) },
  );
}
