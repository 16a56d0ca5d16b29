// Test driver: open the page in a real headless Chromium (Debian's, at CHROMIUM or /usr/bin/chromium) for each
// image URL, wait for #result, print one JSON line per image; the last page is kept as a screenshot.
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
    console.log(JSON.stringify({ image, ...result }));
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
