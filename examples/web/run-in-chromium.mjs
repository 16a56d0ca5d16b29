// Test driver: open the page in a real headless Chromium (Debian's, at CHROMIUM or /usr/bin/chromium), wait for
// #result, print one JSON line per page: its URL, the result, and what the page's DOM holds ("page": the class
// names shown in the bars, the count of <img>, <svg>, <iframe> and inline <script> elements, window.__injected, which
// a test's hostile markup would set, and the #signature line).
//   node run-in-chromium.mjs PAGE_URL MODEL_URL SCREENSHOT IMAGE_URL...  one model, each image (the last page kept as
//                                                                         a screenshot)
//   node run-in-chromium.mjs --each-url URL...                            each whole page URL (?model=, &image=,
//                                                                         &key=) in a fresh context (nothing cached
//                                                                         or stored carries over); one Chromium for
//                                                                         all: a launch costs more than a page
import { chromium } from 'playwright-core';

async function run(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('result').textContent.length > 0, null, { timeout: 60000 });
  const result = JSON.parse(await page.textContent('#result'));
  await page.waitForTimeout(500); // an injected <img onerror> or <svg onload> would have run by now
  const dom = await page.evaluate(() => ({
    names: [...document.querySelectorAll('#bars .name')].map((e) => e.textContent),
    img: document.querySelectorAll('img').length,
    svg: document.querySelectorAll('svg').length,
    iframe: document.querySelectorAll('iframe').length,
    inline_script: document.querySelectorAll('script:not([src])').length,
    injected: window.__injected ?? null,
    signature: document.getElementById('signature').textContent,
  }));
  console.log(JSON.stringify({ url, ...result, page: dom }));
}

const viewport = { width: 800, height: 560 };
const args = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new'],
});
try {
  if (args[0] === '--each-url') {
    for (const url of args.slice(1)) {
      const context = await browser.newContext({ viewport });
      await run(await context.newPage(), url);
      await context.close();
    }
  } else {
    const [pageUrl, model, screenshot, ...images] = args;
    const page = await browser.newPage({ viewport });
    page.on('console', (msg) => { if (msg.type() === 'error') console.error(`console: ${msg.text()}`); });
    for (const image of images) {
      await run(page, `${pageUrl}?model=${encodeURIComponent(model)}&image=${encodeURIComponent(image)}`);
    }
    await page.screenshot({ path: screenshot, fullPage: true });
  }
} finally {
  await browser.close();
}
