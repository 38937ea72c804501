// package.json must agree with the code: settings, defaults, activation and commands.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { DEFAULT_PYTHON, LANGUAGES, languageIds, SERVER_SETTINGS } from '../src/config';

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default: unknown }> = manifest.contributes.configuration.properties;

test('every contributed setting is read by the extension, and every setting it reads is contributed', () => {
  const contributed = Object.keys(properties).sort();
  const read = ['enable', ...SERVER_SETTINGS].map((k) => `hindsight.${k}`).sort();
  assert.deepEqual(contributed, read);
});

test('setting defaults match what the extension and the server assume', () => {
  assert.equal(properties['hindsight.pythonPath']!.default, DEFAULT_PYTHON);
  assert.deepEqual(properties['hindsight.languages']!.default, [...LANGUAGES]);
  assert.equal(properties['hindsight.enable']!.default, true);
});

test('activates on every language it can complete', () => {
  assert.deepEqual(manifest.activationEvents, languageIds(LANGUAGES).map((id) => `onLanguage:${id}`));
});

test('palette commands are titled "Hindsight: …"; internal ones are hidden from the palette', () => {
  const commands: { command: string; category: string }[] = manifest.contributes.commands;
  assert.ok(commands.every((c) => c.category === 'Hindsight'));
  const hidden = manifest.contributes.menus.commandPalette.map((m: { command: string }) => m.command);
  const shown = commands.map((c) => c.command).filter((c) => !hidden.includes(c));
  assert.deepEqual(shown, ['hindsight.toggle', 'hindsight.reload', 'hindsight.showStats']);
});
