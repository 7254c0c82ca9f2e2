// The dashboard and the docs in headless Chromium (Debian's, driven by playwright-core).
// tests/e2e.sh starts ingestd and sets INGESTD_URL and SCREENSHOT_DIR, and starts a second one
// with a token (INGESTD_TOKEN_URL, INGESTD_TOKEN).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.INGESTD_URL;
const TOKEN_BASE = process.env.INGESTD_TOKEN_URL;
const TOKEN = process.env.INGESTD_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR || "target";
// Chromium's own background traffic is refused on this network; these flags keep it quiet.
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let context;
const foreign = [];

before(async () => {
  assert.ok(BASE, "INGESTD_URL is not set");
  assert.ok(TOKEN_BASE && TOKEN, "INGESTD_TOKEN_URL or INGESTD_TOKEN is not set");
  context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "ingestd-chromium-")), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ARGS,
    viewport: { width: 1200, height: 900 },
  });
  // Everything must come from the binary itself: no CDN, no external assets.
  context.on("request", (request) => {
    if (![BASE, TOKEN_BASE].some((base) => request.url().startsWith(base + "/"))) foreign.push(request.url());
  });
});

after(async () => {
  await context?.close();
});

test("the dashboard shows a submitted ingestion move to completed", async () => {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(BASE + "/");
  await page.waitForFunction(() => /ingestions/.test(document.getElementById("summary").textContent));

  await page.fill("#ids", "11, 12, 13, 14, 15, 16, 17");
  await page.selectOption("#priority", "HIGH");
  await page.click("#ingest-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("message").dataset.ingestionId);
  const id = await page.$eval("#message", (m) => m.dataset.ingestionId);
  assert.match(id, /^[0-9a-f-]{36}$/);

  const row = `#ingestions tr[data-id="${id}"]`;
  await page.waitForSelector(row, { timeout: 5000 });
  assert.equal(await page.$eval(`${row} td:nth-child(2)`, (td) => td.textContent), "HIGH");
  assert.equal(await page.$$eval(`${row} .batches .pill`, (pills) => pills.length), 3);
  await page.waitForSelector(`${row}[data-status="completed"]`, { timeout: 15000 });
  const releases = await page.$$eval("#timeline rect.release", (rects) => rects.map((r) => r.getAttribute("fill")));
  assert.ok(releases.length >= 3, `the timeline shows ${releases.length} releases`);
  assert.ok(releases.every((fill) => fill === "#d9480f"), "HIGH releases are drawn in the HIGH colour");

  // Some queued work of each priority, so the screenshot shows the queue and the countdown.
  await page.evaluate(async () => {
    const send = (ids, priority) => fetch("/ingest", { method: "POST", body: JSON.stringify({ ids, priority }) });
    await send([1, 2, 3, 4, 5, 6, 7, 8, 9], "LOW");
    await send([21, 22, 23, 24, 25, 26], "MEDIUM");
    await send([31, 32, 33, 34], "HIGH");
  });
  await page.waitForFunction(() => document.querySelectorAll("#ingestions tr").length >= 4);
  await page.waitForFunction(() => document.querySelectorAll("#timeline rect.release").length >= 5);
  await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });

  // Readable on a phone: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
  await page.screenshot({ path: join(SHOTS, "dashboard-phone.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test("failed batches and ingestions are drawn in their own colour, with the reason", async () => {
  // The server's own /dashboard.json, with one failed ingestion put in: this server's simulated
  // API never fails (tests/upstream.rs makes real ones fail over HTTP).
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const real = await (await page.request.get(BASE + "/dashboard.json")).json();
  const failed = {
    priority: "LOW", ingestion_id: "0b7e1c5e-5f1a-4c56-9c1e-8e0f4c3f2a11", status: "failed", eta_completed: null,
    batches: [
      { batch_id: "6a1d2f4e-0c1b-4a2e-9f3d-1e2c3b4a5d6e", ids: [7, 8], status: "failed", attempts: 2, position: null, eta: null,
        triggered_at: null, completed_at: null, retry_at: null, last_error: "id 8: HTTP 404 after 3 ms", failed_ids: [8] },
      { batch_id: "7b2e3f5a-1d2c-4b3f-8a4e-2f3d4c5b6e7f", ids: [9], status: "completed", attempts: 1, position: null, eta: null,
        triggered_at: null, completed_at: null, retry_at: null, last_error: null, failed_ids: [] },
    ],
  };
  const body = JSON.stringify({ ...real, ingestions: [failed, ...real.ingestions], totals: { ...real.totals, batches_failed: 1 } });
  await page.route("**/dashboard.json", (route) => route.fulfill({ status: 200, contentType: "application/json", body }));
  await page.goto(BASE + "/");
  const row = `#ingestions tr[data-id="${failed.ingestion_id}"]`;
  await page.waitForSelector(`${row}[data-status="failed"]`);
  const colour = (selector) => page.$eval(selector, (e) => getComputedStyle(e).backgroundColor);
  assert.equal(await colour(`${row} td.status .pill`), "rgb(224, 49, 49)");
  assert.equal(await colour(`${row} .batches .pill.st-failed`), "rgb(224, 49, 49)");
  assert.notEqual(await colour(`${row} .batches .pill.st-completed`), "rgb(224, 49, 49)");
  const title = await page.$eval(`${row} .batches .pill.st-failed`, (p) => p.title);
  assert.equal(title, "failed: id 8: HTTP 404 after 3 ms · failed ids 8");
  assert.match(await page.$eval("#summary", (s) => s.textContent), /^since this start: .*1 failed/);
  assert.deepEqual(errors, []);
  await page.close();
});

test("the docs render every route and try-it works on /health", async () => {
  const page = await context.newPage();
  await page.goto(BASE + "/docs");
  await page.waitForSelector("#get-health");
  const ops = await page.$$eval("section.op", (s) => s.map((op) => op.id));
  for (const id of ["post-ingest", "get-status-ingestion-id", "get-health", "get-metrics", "get-openapi-json"]) {
    assert.ok(ops.includes(id), `${id} is not rendered (have ${ops})`);
  }
  await page.click("#get-health summary");
  await page.click("#get-health button[type=submit]");
  await page.waitForSelector("#get-health pre.answer[data-status]");
  const answer = await page.$eval("#get-health pre.answer", (pre) => pre.textContent);
  assert.match(answer, /^200 /);
  assert.match(answer, /"status": "ok"/);

  // And a POST with the example body, which must be accepted.
  await page.click("#post-ingest summary");
  await page.click("#post-ingest button[type=submit]");
  await page.waitForSelector("#post-ingest pre.answer[data-status]");
  assert.match(await page.$eval("#post-ingest pre.answer", (pre) => pre.textContent), /^200 [\s\S]*ingestion_id/);
  await page.screenshot({ path: join(SHOTS, "docs.png"), fullPage: false });
  await page.close();
});

test("with a token, the pages ask for it, keep it for the tab and send it", async () => {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(TOKEN_BASE + "/");
  await page.waitForSelector("#token-form:not([hidden])");
  assert.match(await page.$eval("#summary", (s) => s.textContent), /token/);

  await page.fill("#token", "wrong");
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(() => /refused/.test(document.getElementById("token-note").textContent));
  await page.fill("#token", TOKEN);
  await page.click("#token-form button[type=submit]");
  await page.waitForFunction(() => /ingestions/.test(document.getElementById("summary").textContent));
  assert.equal(await page.$eval("#token-form", (f) => f.hidden), true);
  await page.fill("#ids", "41, 42");
  await page.click("#ingest-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("message").dataset.ingestionId);

  // The docs in the same tab reuse the token.
  await page.goto(TOKEN_BASE + "/docs");
  await page.click("#get-metrics summary");
  await page.click("#get-metrics button[type=submit]");
  await page.waitForSelector("#get-metrics pre.answer[data-status]");
  assert.match(await page.$eval("#get-metrics pre.answer", (pre) => pre.textContent), /^200 [\s\S]*ingestd_ingestions_total/);
  assert.equal(await page.$eval("#token-form", (f) => f.hidden), true);

  // A new tab has none: try-it gets 401, and the docs ask for the token.
  const fresh = await context.newPage();
  await fresh.goto(TOKEN_BASE + "/docs");
  await fresh.click("#get-metrics summary");
  await fresh.click("#get-metrics button[type=submit]");
  await fresh.waitForSelector("#get-metrics pre.answer[data-status]");
  assert.match(await fresh.$eval("#get-metrics pre.answer", (pre) => pre.textContent), /^401 /);
  await fresh.waitForSelector("#token-form:not([hidden])");
  await fresh.fill("#token", TOKEN);
  await fresh.click("#token-form button[type=submit]");
  await fresh.click("#get-metrics button[type=submit]");
  await fresh.waitForFunction(() => /^200 /.test(document.querySelector("#get-metrics pre.answer").textContent));
  assert.deepEqual(errors, []);
  await fresh.close();
  await page.close();
});

test("nothing was fetched from anywhere but the server", () => {
  assert.deepEqual(foreign, []);
});
