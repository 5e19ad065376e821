// A headless browser driven for tests/integration/test_dashboard.py: Debian's Chromium
// (/usr/bin/chromium) through playwright-core, or with the argument "firefox" Debian's Firefox ESR
// (/usr/bin/firefox-esr) through puppeteer-core over WebDriver BiDi (playwright drives only its own
// patched Firefox, which is a download). Never a browser download. It reads one JSON command per line
// on stdin and answers one JSON line on stdout: {"id", "ok": true, "value"} or {"id", "ok": false,
// "error"}. It records every request the page makes and every console message and page error, so that
// a test can check that nothing was fetched from an injected URL and nothing ran.
'use strict';
const readline = require('readline');

// The test's function source as a function (in Node, never in the page, whose CSP forbids eval).
// eslint-disable-next-line no-new-func
const fn = (source) => new Function(`return (${source});`)();

async function chromiumPage() {
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    // As root, Chromium refuses its own sandbox; the page's security does not rest on it.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1480, height: 900 } });
  const page = await context.newPage();
  return {
    browser,
    page,
    ops: {
      fill: (c) => page.fill(c.selector, c.value),
      click: (c) => page.click(c.selector),
      select: (c) => page.selectOption(c.selector, c.value),
      wait: (c) => page.waitForSelector(c.selector, { state: c.state || 'visible', timeout: c.timeout || 30000 })
        .then(() => true),
      // expr: a function's source ("(arg) => ..."), run in the page with arg (until: until it returns
      // something truthy). Made into a function here, in Node: playwright sends its source to the page.
      until: (c) => page.waitForFunction(fn(c.expr), c.arg ?? null, { timeout: c.timeout || 30000, polling: 200 })
        .then((h) => h.jsonValue()),
      text: (c) => page.textContent(c.selector),
    },
  };
}

async function firefoxPage() {
  const puppeteer = require('puppeteer-core');
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    defaultViewport: { width: 1480, height: 900 },
  });
  const page = await browser.newPage();
  const waitState = { visible: { visible: true }, hidden: { hidden: true }, detached: { hidden: true }, attached: {} };
  return {
    browser,
    page,
    ops: {
      // Cleared first, as playwright's fill does, then typed key by key.
      fill: async (c) => {
        await page.$eval(c.selector, (e) => { e.value = ''; });
        await page.type(c.selector, c.value);
      },
      // A locator, not page.click: the tree is redrawn as changes come, and a locator finds the node
      // again when the one it found is replaced (page.click fails "Node is detached"), as playwright does.
      click: (c) => page.locator(c.selector).setTimeout(c.timeout || 30000).click(),
      select: (c) => page.select(c.selector, c.value),
      wait: (c) => page.waitForSelector(c.selector, { ...waitState[c.state || 'visible'], timeout: c.timeout || 30000 })
        .then(() => true),
      until: (c) => page.waitForFunction(fn(c.expr), { timeout: c.timeout || 30000, polling: 200 }, c.arg ?? null)
        .then((h) => h.jsonValue()),
      text: (c) => page.$eval(c.selector, (e) => e.textContent),
    },
  };
}

async function main() {
  const { browser, page, ops: own } = await (process.argv[2] === 'firefox' ? firefoxPage() : chromiumPage());
  const requests = [];
  const messages = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => messages.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { messages.push(`dialog: ${d.message()}`); d.dismiss(); });

  // What both libraries spell alike; the rest is each browser's own (ops above).
  const ops = {
    goto: (c) => page.goto(c.url, { waitUntil: 'load' }).then((r) => r && r.status()),
    reload: () => page.reload({ waitUntil: 'load' }).then((r) => r && r.status()),
    eval: (c) => page.evaluate(fn(c.expr), c.arg ?? null),
    ...own,
    screenshot: (c) => page.screenshot({ path: c.path, fullPage: !!c.full }).then(() => c.path),
    requests: () => requests.slice(),
    messages: () => messages.slice(),
    url: () => page.url(),
    close: async () => { await browser.close(); setImmediate(() => process.exit(0)); return true; },
  };

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    let c;
    try {
      c = JSON.parse(line);
    } catch (e) {
      continue;
    }
    let reply;
    try {
      if (!ops[c.op]) throw new Error(`no op ${c.op}`);
      const value = await ops[c.op](c);
      reply = { id: c.id, ok: true, value: value === undefined ? null : value };
    } catch (e) {
      reply = { id: c.id, ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  }
  await browser.close();
}

main().catch((e) => {
  process.stderr.write(`driver: ${e.stack || e}\n`);
  process.exit(1);
});
