// Appended to a copy of Snakemake's HTML report and run in headless Chromium: walks the
// report's own menu like a reader (Results -> each category -> each file), and for every file
// it opens (its "eye" button) records the image the app displays (natural size, or null when it is broken),
// or for an HTML page the text of the page its iframe shows.
// Reports one console message: "neurotrain check result: <base64 of the JSON result>".
(function () {
  const out = { categories: {}, shown: {}, errors: [] };
  window.addEventListener("error", (e) => out.errors.push(String(e.message)));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const leaves = (sel) => [...document.querySelectorAll(sel)].filter((e) => e.children.length === 0 ||
    e.tagName === "A" || e.tagName === "TD");
  const byText = (sel, t) => [...document.querySelectorAll(sel)].reverse().find((e) => e.textContent.trim() === t);
  const settle = async () => { await sleep(200); };
  // an HTML result opens in an iframe whose src is a base64 data URI: its decoded text
  async function htmlShown() {
    for (let i = 0; i < 50; i++) {
      const frame = document.querySelector("#app iframe");
      if (frame && frame.src.startsWith("data:text/html")) {
        const b64 = frame.src.slice(frame.src.indexOf("base64,") + 7);
        return { html: new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))) };
      }
      await sleep(100);
    }
    return { html: null };
  }
  async function imageShown() {
    for (let i = 0; i < 50; i++) {
      const imgs = [...document.querySelectorAll("#app img")].filter((im) => im.src.startsWith("data:image/png"));
      if (imgs.length && imgs.every((im) => im.complete)) {
        return imgs.map((im) => im.naturalWidth > 0 ? [im.naturalWidth, im.naturalHeight] : null);
      }
      await sleep(100);
    }
    return [];
  }
  async function run() {
    await settle();
    const cats = Object.keys(categories);  // the report's own categories (one per system)
    for (const cat of cats) {
      const home = byText("#app nav a", "Results");
      if (home) { home.click(); await settle(); }
      const link = byText("#app nav *", cat);
      if (!link) { out.categories[cat] = null; continue; }
      link.click();
      await settle();
      const files = leaves("#app nav td").map((e) => e.textContent.trim()).filter((t) => t.startsWith("results/"));
      out.categories[cat] = files;
      for (const f of files) {
        const cell = byText("#app nav td", f);
        if (!cell) { out.shown[f] = "no menu entry"; continue; }
        const eye = cell.parentElement.querySelector('a[iconname="eye"]');
        if (!eye) { out.shown[f] = "no view button"; continue; }
        eye.click();
        await settle();
        out.shown[f] = f.endsWith(".html") ? await htmlShown() : await imageShown();
        const back = byText("#app nav a", cat);
        if (back && !byText("#app nav td", f)) { back.click(); await settle(); }
      }
    }
    // base64 of the UTF-8 JSON: the console line stays one plain token whatever the pages hold
    const bytes = new TextEncoder().encode(JSON.stringify(out));
    console.log("neurotrain check result: " + btoa(String.fromCharCode(...bytes)));
  }
  const start = () => run().catch((e) => console.log("neurotrain check failed: " + e));
  if (document.readyState === "complete") start(); else window.addEventListener("load", start);
})();
