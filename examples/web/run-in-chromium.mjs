// Test driver: open the page in a real headless Chromium (Debian's, at CHROMIUM or /usr/bin/chromium) for each
// image URL, wait for #result, print one JSON line per image; the last page is kept as a screenshot. Each line
// also says what the page's DOM holds ("page": the class names shown in the bars, the count of <img>, <svg>,
// <iframe> and inline <script> elements, and window.__injected, which a test's hostile markup would set).
//   node run-in-chromium.mjs PAGE_URL MODEL_URL SCREENSHOT IMAGE_URL...
import { chromium } from 'playwright-core';

const [page_url, model, screenshot, ...images] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new'],
});
try {
  const page = await browser.newPage({ viewport: { width: 800, height: 560 } });
  page.on('console', (msg) => { if (msg.type() === 'error') console.error(`console: ${msg.text()}`); });
  for (const image of images) {
    await page.goto(`${page_url}?model=${encodeURIComponent(model)}&image=${encodeURIComponent(image)}`);
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
    }));
    console.log(JSON.stringify({ image, ...result, page: dom }));
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
