// The operator console in headless chromium (driven by
// tests/integration/test_console_browser.py, which starts essd, the streams
// and the two clients and passes them in ESS_* variables). Every wait is
// bounded; the first failed step exits 1 with what it saw.
"use strict";

const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const puppeteer = require("puppeteer-core");

const URL = process.env.ESS_URL;
const TOKEN = process.env.ESS_TOKEN;
const LUA = process.env.ESS_LUA_DIR;
const KEYS = process.env.ESS_KEYS.split(",");
const IDS = process.env.ESS_IDS.split(",").map(Number);
const SHOTS = process.env.ESS_SHOTS;

let step = "start";
function log(msg) { console.log("console.test: " + msg); }

function publish(key, count, size) {
  const args = ["--routing-key", key, "--count", String(count), "--format", "json"];
  if (size) args.push("--size", String(size));
  execFileSync(process.env.ESS_PUBLISH, args, { stdio: "pipe", timeout: 120000 });
}

async function waitFor(page, what, fn, arg, timeout = 30000) {
  step = what;
  try {
    return await page.waitForFunction(fn, { timeout, polling: 250 }, arg);
  } catch (e) {
    throw new Error(`timed out waiting for: ${what}`);
  }
}

const text = (page, sel) => page.$eval(sel, (e) => e.textContent.trim());
const cell = (page, id, cls) =>
  page.$eval(`#stream-table tr[data-id="${id}"] td.${cls}`, (e) => e.textContent.trim());

async function shot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
  log("screenshot " + path.join(SHOTS, name));
}

async function main() {
  const browser = await puppeteer.launch({
    executablePath: process.env.ESS_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 1000 });
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(URL)) external.push(r.url()); });
    page.on("pageerror", (e) => log("page error: " + e.message));

    // 1. The page asks for the token once, then keeps it for the tab.
    step = "open /ui/";
    await page.goto(URL + "/ui/", { waitUntil: "domcontentloaded" });
    await waitFor(page, "the token dialog", () => document.getElementById("token-dialog").open);
    await page.type("#token", TOKEN);
    await page.click("#token-form button[type=submit]");
    await waitFor(page, "3 rows", () => document.querySelectorAll("#stream-table tbody tr").length === 3);
    const stored = await page.evaluate(() => sessionStorage.getItem("essd.console.token"));
    if (stored !== TOKEN) throw new Error("the token is not in sessionStorage");

    // 2. The rows: two with a live client, one without.
    step = "rows";
    const rows = await page.$$eval("#stream-table tbody tr", (trs) =>
      trs.map((tr) => ({ id: Number(tr.dataset.id), cls: tr.className, text: tr.textContent })));
    const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
    for (let i = 0; i < 3; i++) {
      if (!byId[IDS[i]]) throw new Error(`row ${IDS[i]} missing: ${JSON.stringify(rows)}`);
      if (!byId[IDS[i]].text.includes(KEYS[i])) throw new Error(`row ${IDS[i]} lacks its routing key`);
    }
    if (byId[IDS[0]].cls !== "live" || byId[IDS[1]].cls !== "live" || byId[IDS[2]].cls !== "idle")
      throw new Error("live/idle rows wrong: " + JSON.stringify(rows.map((r) => [r.id, r.cls])));
    if (!byId[IDS[0]].text.includes("reader-client/1.0") || !byId[IDS[1]].text.includes("slow-client/2.0"))
      throw new Error("the User-Agents are not shown");
    log("rows ok");

    // 3. Publish: the counters move, and the client that never reads falls behind.
    await waitFor(page, "the feed", () => document.getElementById("feed-state").textContent === "live");
    const outBefore = Number((await text(page, "#t-total-out")).replace(/,/g, "")) || 0;
    step = "publish";
    publish(KEYS[0], 300);
    // More than the kernel's socket buffers hold (megabytes on loopback).
    publish(KEYS[1], 1500, 8192);
    await waitFor(page, "frames out to grow",
      (before) => Number(document.getElementById("t-total-out").textContent.replace(/,/g, "")) >= before + 300,
      outBefore);
    await waitFor(page, "the reader's delivered offset",
      (id) => {
        const td = document.querySelector(`#stream-table tr[data-id="${id}"] td.delivered`);
        return td && td.textContent !== "–" && Number(td.textContent.replace(/,/g, "")) >= 300;
      }, IDS[0]);
    await waitFor(page, "the slow client's lag", (id) => {
      const td = document.querySelector(`#stream-table tr[data-id="${id}"] td.lag-warn, #stream-table tr[data-id="${id}"] td.lag-bad`);
      return td && Number(td.textContent.replace(/,/g, "")) > 0;
    }, IDS[1], 60000);
    log(`lag of ${IDS[1]}: ${await page.$eval(`#stream-table tr[data-id="${IDS[1]}"] td.lag-warn, #stream-table tr[data-id="${IDS[1]}"] td.lag-bad`, (e) => e.textContent)}; ` +
      `delivered ${await cell(page, IDS[0], "delivered")}, tail ${await cell(page, IDS[0], "tail")}`);
    // Sorting by lag puts the lagging client first.
    step = "sort by lag";
    await page.click('#stream-table th[data-sort="lag"]');
    await waitFor(page, "the lagging row first",
      (id) => Number(document.querySelector("#stream-table tbody tr").dataset.id) === id, IDS[1]);
    await waitFor(page, "a chart drawn", () => document.querySelectorAll("#c-msgs polyline").length === 2);
    await shot(page, "console-overview.png");

    // 4. Filter.
    step = "filter";
    await page.type("#filter", KEYS[2]);
    await waitFor(page, "one filtered row", (id) => {
      const trs = document.querySelectorAll("#stream-table tbody tr");
      return trs.length === 1 && Number(trs[0].dataset.id) === id;
    }, IDS[2]);
    await page.$eval("#filter", (e) => { e.value = ""; e.dispatchEvent(new Event("input")); });
    await waitFor(page, "3 rows again", () => document.querySelectorAll("#stream-table tbody tr").length === 3);

    // 5. A bad enrich script is refused with its file:line; the running one stays.
    const enrichFile = path.join(LUA, "ess", "enrich.lua");
    const good = fs.readFileSync(enrichFile, "utf8");
    const gen0 = await text(page, "#generation");
    step = "bad reload";
    fs.writeFileSync(enrichFile, good.replace(/\n/, "\nlocal broken = = 1\n"));
    await page.click("#reload");
    await waitFor(page, "the reload error with file:line", () => {
      const e = document.getElementById("reload-error");
      return !e.hidden && /enrich\.lua:2:/.test(e.textContent);
    });
    log("refused: " + (await text(page, "#reload-error")).split("\n")[0]);
    if ((await text(page, "#generation")) !== gen0) throw new Error("the generation changed on a refused reload");
    await shot(page, "console-reload-refused.png");

    // 6. Fixed: the reload succeeds and the generation changes.
    step = "good reload";
    fs.writeFileSync(enrichFile, good);
    await page.click("#reload");
    await waitFor(page, "a new generation", (g) => {
      const t = document.getElementById("generation").textContent;
      return t !== g && t !== "–" && document.getElementById("reload-error").hidden;
    }, gen0);
    log(`generation ${gen0} -> ${await text(page, "#generation")}`);

    // 7. Tail of the reading client: the frames it was sent, beside the raw bodies.
    step = "tail";
    await page.click(`#stream-table tr[data-id="${IDS[0]}"] .tail-btn`);
    await waitFor(page, "the tail watching", () => /watching/.test(document.getElementById("tail-state").textContent));
    publish(KEYS[0], 5);
    await waitFor(page, "5 tail rows", () => document.querySelectorAll("#tail-table tbody tr").length >= 5);
    const tail = await page.$$eval("#tail-table tbody tr", (trs) =>
      trs.map((tr) => ({ raw: tr.querySelector(".raw").textContent, frame: tr.querySelector(".frame").textContent })));
    for (const r of tail) {
      const raw = JSON.parse(r.raw), frame = JSON.parse(r.frame);
      for (const k of Object.keys(raw))
        if (JSON.stringify(frame[k]) !== JSON.stringify(raw[k])) throw new Error("the frame lost a raw field " + k);
    }
    await shot(page, "console-tail.png");
    await page.click("#tail-stop");

    // 8. DELETE from the page, with a confirmation: the row goes, its client is closed.
    step = "delete";
    const connsBefore = Number(await text(page, "#t-connections"));
    await page.click(`#stream-table tr[data-id="${IDS[0]}"] .delete-btn`);
    await waitFor(page, "the confirmation", () => document.getElementById("confirm-dialog").open);
    if (!(await text(page, "#confirm-text")).includes("live client will be closed"))
      throw new Error("the confirmation does not say the client will be closed");
    await page.click("#confirm-yes");
    await waitFor(page, "the row gone", (id) => !document.querySelector(`#stream-table tr[data-id="${id}"]`), IDS[0]);
    await waitFor(page, "one connection fewer",
      (n) => Number(document.getElementById("t-connections").textContent) === n - 1, connsBefore);

    if (external.length) throw new Error("requests outside essd: " + external.join(", "));
    log("OK");
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`console.test: FAILED at "${step}": ${e.message}`);
  process.exit(1);
});
