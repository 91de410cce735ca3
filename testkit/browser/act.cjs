// Acts on pages as a person does, with puppeteer-core driving the system's Chromium (the
// CHROMIUM environment variable names it): reads a JSON list of steps on its standard input,
// prints a JSON answer.
//
// Steps: {"goto": url} · {"fill": [selector, text]} · {"check": [selector, bool]} ·
// {"submit": selector} (clicks it and waits for the page it loads; its HTTP status is kept) ·
// {"click": selector} · {"wait": selector} (until it is in the page) · {"dom": true}.
// Answer: {"doms": [html, …], "statuses": [status, …]}; a failing step exits 1 saying which.
"use strict";
const fs = require("fs");
const puppeteer = require("puppeteer-core");

async function main() {
  const steps = JSON.parse(fs.readFileSync(0, "utf8"));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const answer = { doms: [], statuses: [] };
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(30000);
    for (const [i, step] of steps.entries()) {
      try {
        if (step.goto !== undefined) {
          const r = await page.goto(step.goto, { waitUntil: "load" });
          answer.statuses.push(r ? r.status() : 0);
        } else if (step.fill !== undefined) {
          const [sel, text] = step.fill;
          // A date or time field is typed in segments a person picks: it is set, as a picker
          // sets it.
          const picked = await page.$eval(sel, (e, text) => {
            e.value = "";
            if (!["date", "time", "datetime-local"].includes(e.type)) return false;
            e.value = text;
            e.dispatchEvent(new Event("input", { bubbles: true }));
            e.dispatchEvent(new Event("change", { bubbles: true }));
            return true;
          }, text);
          if (!picked) await page.type(sel, text);
        } else if (step.check !== undefined) {
          const [sel, on] = step.check;
          await page.$eval(sel, (e, on) => { e.checked = on; }, on);
        } else if (step.submit !== undefined) {
          const [r] = await Promise.all([
            page.waitForNavigation({ waitUntil: "load" }),
            page.click(step.submit),
          ]);
          answer.statuses.push(r ? r.status() : 0);
        } else if (step.click !== undefined) {
          await page.click(step.click);
        } else if (step.wait !== undefined) {
          await page.waitForSelector(step.wait);
        } else if (step.dom !== undefined) {
          answer.doms.push(await page.content());
        } else {
          throw new Error("unknown step");
        }
      } catch (e) {
        throw new Error(`step ${i} ${JSON.stringify(step)}: ${e.message}`);
      }
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(answer));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
