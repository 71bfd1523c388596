// Drives Debian's chromium headless through the gateway's live view for
// e2e/web_test.go (TestLiveViewInABrowser):
//
//   node liveview.js '{"url":"http://127.0.0.1:PORT/","device":"web1","split":2,
//                      "screenshot":"../../docs/live-view.png","timeoutMs":90000}'
//
// It opens the page, waits until it shows the device with a live, non-zero
// fps, an annotated frame and a few points in the chart, clicks the split
// button, waits until the page shows the device's confirmation (split and
// manual mode from its state), saves a screenshot, and checks that the
// page fits a phone's width. It fails on any console error (a CSP
// violation, a script error, a failed request). The last line it prints
// is a JSON summary; it exits non-zero on failure.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const opts = JSON.parse(process.argv[2] || '{}');
const timeout = opts.timeoutMs || 90000;
const id = opts.device;
const card = `.card[data-device="${id}"]`;

function log(...a) { console.error(new Date().toISOString(), ...a); }

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitpoint-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 900, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    httpCredentials: opts.user ? { username: opts.user, password: opts.password } : undefined,
    timeout,
  });
  const problems = [];
  const summary = {};
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('requestfailed', (r) => {
      // The event stream is cut when the page closes; anything else is a problem.
      if (!r.url().endsWith('/events')) problems.push('request failed: ' + r.url() + ' ' + (r.failure() || {}).errorText);
    });

    log('opening', opts.url);
    await page.goto(opts.url, { waitUntil: 'load' });
    await page.waitForSelector('#conn[data-state="live"]');
    log('connected; waiting for', id, 'with a live fps');
    await page.waitForSelector(card);
    await page.waitForFunction((sel) => {
      const el = document.querySelector(sel + ' .fps');
      return el && parseFloat(el.textContent) > 0;
    }, card);
    summary.fpsBefore = parseFloat(await page.textContent(card + ' .fps'));
    summary.splitBefore = await page.textContent(card + ' .split');
    log('fps', summary.fpsBefore, 'split', summary.splitBefore);
    await page.waitForFunction((sel) => {
      const img = document.querySelector(sel + ' .frame img');
      return img && img.complete && img.naturalWidth > 0;
    }, card);
    log('annotated frame shown');

    await page.click(`${card} button[data-split="${opts.split}"]`);
    log('clicked split', opts.split);
    await page.waitForFunction(([sel, k]) => {
      const c = document.querySelector(sel);
      return c.querySelector('.split').textContent === String(k) &&
        c.querySelector('.mode').textContent === 'manual' &&
        c.querySelector(`button[data-split="${k}"]`).classList.contains('active');
    }, [card, opts.split]);
    summary.message = await page.textContent(card + ' .msg');
    summary.reason = await page.textContent(card + ' .reason');
    log('the page shows split', opts.split, 'manual:', summary.reason);
    // A few more points in the chart after the change, and a fresh frame.
    await page.waitForFunction(([devId, after, total]) => {
      const d = devices.get(devId); // app.js's model (a global lexical binding)
      if (!d) return false;
      const k = d.data.split;
      let n = 0;
      for (let i = d.hist.length - 1; i >= 0 && d.hist[i][2] === k; i--) n++;
      return n >= after && d.hist.length >= total;
    }, [id, 8, 24]);
    summary.fpsAfter = parseFloat(await page.textContent(card + ' .fps'));
    if (opts.screenshot) {
      const height = await page.evaluate(() => Math.ceil(document.body.getBoundingClientRect().height));
      await page.setViewportSize({ width: 900, height: Math.min(900, Math.max(300, height)) });
      await page.waitForTimeout(1200); // a redraw at the new size
      await page.screenshot({ path: opts.screenshot, fullPage: true });
      log('screenshot', opts.screenshot);
    }

    // A phone: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    summary.phoneWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    if (summary.phoneWidth > 390) problems.push('on a 390 px wide screen the page is ' + summary.phoneWidth + ' px wide');
    if (opts.phoneScreenshot) await page.screenshot({ path: opts.phoneScreenshot, fullPage: true });
  } catch (e) {
    problems.push(String(e && e.stack || e));
    if (opts.failureScreenshot) {
      const p = context.pages()[0];
      if (p) await p.screenshot({ path: opts.failureScreenshot, fullPage: true }).catch(() => {});
    }
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  summary.ok = problems.length === 0;
  summary.problems = problems;
  console.log(JSON.stringify(summary));
  process.exit(summary.ok ? 0 : 1);
}

main().catch((e) => { console.log(JSON.stringify({ ok: false, problems: [String(e && e.stack || e)] })); process.exit(1); });
