// Drives a real VS Code (code-server) in Chromium for the end-to-end tests (tests/test_vscode_e2e.py).
// One JSON command per line on stdin, one JSON answer per line on stdout: {"ok": true, ...} or
// {"ok": false, "error": "..."}. The page is the workbench at the URL given first ({"op": "goto"}).
//
//   node driver.cjs                 PLAYWRIGHT_CORE=<path of playwright-core>  CHROMIUM=/usr/bin/chromium
'use strict';
const readline = require('node:readline');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const EDITOR = '.editor-group-container .monaco-editor';
// Ghost text: the rest of the cursor's line, and the lines below it when the suggestion has more. Beside the
// suggest widget, the selected item's rest is drawn as `.ghost-text-decoration` and the inline suggestion's
// own text after it as `.ghost-text-decoration-preview`; the lines below the cursor's are view lines in a
// `.suggest-preview-text` view zone.
const INLINE = `${EDITOR} .ghost-text-decoration, ${EDITOR} .ghost-text-decoration-preview`;
const GHOST = `${INLINE}, ${EDITOR} .ghost-text`;

let browser;
let page;

/** Opens the quick input (Quick Open, the palette) with `key`, pressed again while the key went unheard. */
async function quickInput(key) {
  for (let attempt = 1; ; attempt++) {
    await page.keyboard.press(key);
    try {
      await page.waitForFunction(() => document.activeElement?.closest('.quick-input-widget'), null, { timeout: 3000 });
      return;
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
}

async function run(cmd) {
  switch (cmd.op) {
    case 'goto': {
      browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
      });
      page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await page.goto(cmd.url);
      await page.waitForSelector('.monaco-workbench', { timeout: cmd.timeout ?? 60000 });
      await page.waitForSelector('.statusbar', { timeout: cmd.timeout ?? 60000 });
      return {};
    }
    case 'open': {  // Quick Open, the file's name, Enter; then wait for its editor to have the focus
      await quickInput('Control+P');
      await page.keyboard.type(cmd.file, { delay: 20 });
      await page.locator('.quick-input-list .monaco-list-row', { hasText: cmd.file }).first().click({ timeout: 20000 });
      await page.waitForSelector(`.tab.active[aria-label*="${cmd.file}"]`, { timeout: 20000 });
      await page.locator(`${EDITOR} .view-lines`).first().click();
      return {};
    }
    case 'press':
      await page.keyboard.press(cmd.key);
      return {};
    case 'type':
      await page.keyboard.type(cmd.text, { delay: cmd.delay ?? 100 });
      return {};
    case 'wait':
      await page.waitForTimeout(cmd.ms);
      return {};
    case 'ghost': {  // the ghost text shown within `timeout` ms ("" when none)
      try {
        await page.waitForSelector(GHOST, { state: 'visible', timeout: cmd.timeout ?? 15000 });
      } catch {
        return { text: '' };
      }
      // The rest of the line comes in spans (one per token colour); each line below is a view line, drawn
      // a moment later: read until two reads agree.
      const text = (parts) => parts.join('\n').replace(/\u00a0/g, ' ');
      const read = async () => {
        const inline = (await page.locator(INLINE).allTextContents()).join('');
        const below = await page.locator(`${EDITOR} .suggest-preview-text .view-line`).allTextContents();
        const preview = (await page.locator(`${EDITOR} .ghost-text-decoration-preview`).allTextContents()).join('');
        return { text: text([inline, ...below]), beyondWidget: text([preview]) };
      };
      let last = await read();
      for (let i = 0; i < 20; i++) {
        await page.waitForTimeout(150);
        const now = await read();
        if (now.text === last.text && now.beyondWidget === last.beyondWidget) break;
        last = now;
      }
      return last;
    }
    case 'suggestWidget':  // whether VS Code's own suggest widget is open
      return { visible: await page.locator('.editor-widget.suggest-widget.visible').count() > 0 };
    case 'command': {  // a command from the palette, by its title
      await quickInput('Control+Shift+P');
      await page.keyboard.type(cmd.title, { delay: 20 });
      await page.locator('.quick-input-list .monaco-list-row', { hasText: cmd.title }).first().click({ timeout: 20000 });
      return {};
    }
    case 'waitFor':  // an element matching a selector appears (or, with `gone`, disappears)
      await page.waitForSelector(cmd.selector, { state: cmd.gone ? 'detached' : 'attached', timeout: cmd.timeout ?? 15000 });
      return {};
    case 'text':  // the text of the elements matching a selector
      return { texts: await page.locator(cmd.selector).allInnerTexts() };
    case 'statusbar':  // the status bar's items' texts
      return { items: await page.locator('.statusbar-item').allInnerTexts() };
    case 'notifications':
      return { texts: await page.locator('.notifications-toasts .notification-list-item-message').allInnerTexts() };
    case 'screenshot':
      await page.screenshot({ path: cmd.path, clip: cmd.clip });
      return { path: cmd.path };
    case 'close':
      if (browser) await browser.close();
      return {};
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      answer = { ok: true, ...(await run(JSON.parse(line))) };
    } catch (error) {
      answer = { ok: false, error: String(error && error.message ? error.message : error).split('\n')[0] };
      if (page && process.env.SCREENSHOT_ON_ERROR) {  // what the page showed, for the failure's report
        await page.screenshot({ path: process.env.SCREENSHOT_ON_ERROR }).catch(() => {});
        answer.screenshot = process.env.SCREENSHOT_ON_ERROR;
      }
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  });
});
lines.on('close', () => queue.then(() => browser && browser.close()));
