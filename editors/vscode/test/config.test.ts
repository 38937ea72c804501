import assert from 'node:assert/strict';
import { test } from 'node:test';
import { documentFilters, enabledLanguages, initializationOptions, languageIds, LANGUAGES, serverCommand } from '../src/config';

test('no settings: python3 -m hindsight serve, and no options so the server keeps its defaults', () => {
  assert.deepEqual(serverCommand({}), { command: 'python3', args: ['-m', 'hindsight', 'serve'] });
  assert.deepEqual(initializationOptions({}), {});
});

test('pythonPath picks the interpreter; a blank one falls back to python3', () => {
  assert.deepEqual(serverCommand({ pythonPath: '/opt/h/.venv/bin/python' }).command, '/opt/h/.venv/bin/python');
  assert.deepEqual(serverCommand({ pythonPath: '  ' }).command, 'python3');
});

test('serverCommand overrides the whole command, but not when empty or not a list of strings', () => {
  const user = { pythonPath: '/usr/bin/python3', serverCommand: ['hindsight', 'serve', '--model', 'm.gguf'] };
  assert.deepEqual(serverCommand(user), { command: 'hindsight', args: ['serve', '--model', 'm.gguf'] });
  assert.equal(serverCommand({ ...user, serverCommand: [] }).command, '/usr/bin/python3');
  assert.equal(serverCommand({ ...user, serverCommand: ['hindsight', 3] }).command, '/usr/bin/python3');
});

test('the settings a user set map onto camelCase initializationOptions, nested where the server nests them', () => {
  const options = initializationOptions({
    model: '/models/coder.gguf',
    modelName: 'qwen2.5-coder:1.5b-base',
    modelTemplate: 'qwen2.5-coder',
    backend: 'ollama',
    baseUrl: 'http://127.0.0.1:9000',
    apiKeyEnv: 'OLLAMA_KEY',
    'context.prefixTokens': 2048,
    'context.crossFileTokens': 0,
    'gate.threshold': 0.25,
    languages: ['python', 'go'],
    pythonPath: '/usr/bin/python3',
    enable: false,
  });
  assert.deepEqual(options, {
    model: { path: '/models/coder.gguf', name: 'qwen2.5-coder:1.5b-base', template: 'qwen2.5-coder' },
    backend: 'ollama',
    baseUrl: 'http://127.0.0.1:9000',
    apiKeyEnv: 'OLLAMA_KEY',
    context: { prefixTokens: 2048, contextTokens: 0 },
    gate: { threshold: 0.25 },
    languages: ['python', 'go'],
  });
});

test('values keep their JSON types: null model means the embedded model, numbers stay numbers', () => {
  const options = initializationOptions({ model: null, 'gate.threshold': null, 'context.prefixTokens': 512 });
  assert.deepEqual(options, { model: { path: null }, gate: { threshold: null }, context: { prefixTokens: 512 } });
  assert.equal(typeof (options['context'] as Record<string, unknown>)['prefixTokens'], 'number');
});

test('a wrongly typed value is passed on for the server to report, not silently dropped', () => {
  assert.deepEqual(initializationOptions({ 'context.prefixTokens': 'lots' }), { context: { prefixTokens: 'lots' } });
});

test('languages: all by default; the user list without unknown names; VS Code ids include the React variants', () => {
  assert.deepEqual(enabledLanguages({}), [...LANGUAGES]);
  assert.deepEqual(enabledLanguages({ languages: ['go', 'cobol', 'tsx'] }), ['go', 'tsx']);
  assert.deepEqual(languageIds(['javascript', 'tsx']), ['javascript', 'javascriptreact', 'typescriptreact']);
  assert.deepEqual(documentFilters({ languages: ['rust'] }), [
    { scheme: 'file', language: 'rust' },
    { scheme: 'untitled', language: 'rust' },
  ]);
});
