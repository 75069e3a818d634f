// Drives Debian's Chromium (headless) through the dashboard for
// tests/dashboard.rs: signs in as an admin on the login page, reads what
// the dashboard shows, revokes a session and unlocks a user with its
// buttons, and keeps screenshots. Prints one JSON document on stdout; the
// Rust test asserts on it. The browser trusts the controller through the
// Umbra CA in $HOME/.pki/nssdb (set up by the test), not by ignoring
// certificate errors.
//
// Environment: UMBRA_UI_URL, UMBRA_UI_USER, UMBRA_UI_PASSWORD,
// UMBRA_UI_TOTP, UMBRA_UI_REVOKE_USER, UMBRA_UI_UNLOCK_USER,
// UMBRA_UI_SCREENSHOTS (a directory).
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('UMBRA_UI_URL');
const shots = env('UMBRA_UI_SCREENSHOTS');

// Everything a test asserts on, read from the page's data attributes.
async function read(page) {
  return page.evaluate(() => {
    const card = (id) => {
      const el = document.getElementById(id);
      return { data: el.dataset.value, value: el.querySelector('.value').textContent.trim() };
    };
    const rows = (selector, f) => [...document.querySelectorAll(selector)].map(f);
    return {
      url: location.href,
      title: document.title,
      me: document.getElementById('me')?.textContent.trim(),
      notice: document.getElementById('notice')?.textContent.trim() ?? null,
      cards: {
        active_sessions: card('active-sessions'),
        auth_success: card('auth-success'),
        average_risk: card('average-risk'),
        compliant_devices: card('compliant-devices'),
      },
      risk_bands: rows('#risk-distribution .band', (g) => ({ band: g.dataset.band, count: Number(g.dataset.count) })),
      trend: {
        allowed: Number(document.getElementById('access-trend').dataset.allowed),
        refused: Number(document.getElementById('access-trend').dataset.refused),
        hours: document.querySelectorAll('#access-trend .hour').length,
      },
      alerts: rows('#alerts tr.alert', (r) => ({ user: r.dataset.user, threat: r.dataset.threat, detail: r.querySelector('.detail').textContent })),
      sessions: rows('#sessions tr.session', (r) => ({ id: r.dataset.id, user: r.dataset.user, risk: Number(r.dataset.risk) })),
      devices: rows('#devices tr.device', (r) => ({
        user: r.dataset.user,
        compliance: r.querySelector('[data-compliance]').dataset.compliance,
        failing: [...r.querySelectorAll('.findings li')].map((li) => ({ check: li.dataset.check, text: li.textContent.trim() })),
      })),
      users: rows('#users tr.user', (r) => ({ name: r.dataset.user, status: r.dataset.status })),
      scripts: document.scripts.length,
    };
  });
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  // Not signed in: the dashboard sends the browser to the login page.
  await page.goto(`${base}/ui/`);
  out.login_url = page.url();
  await page.fill('#user', env('UMBRA_UI_USER'));
  await page.fill('#password', env('UMBRA_UI_PASSWORD'));
  await page.fill('#totp', env('UMBRA_UI_TOTP'));
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  if (page.url() !== `${base}/ui/`) {
    const error = await page.locator('.error').textContent().catch(() => '');
    throw new Error(`the login did not reach the dashboard: ${page.url()}: ${error}`);
  }
  out.before = await read(page);
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // Revoke the session of UMBRA_UI_REVOKE_USER with its button.
  const revoke = env('UMBRA_UI_REVOKE_USER');
  await Promise.all([
    page.waitForURL(/\/ui\/\?done=revoke/),
    page.click(`#sessions tr.session[data-user="${revoke}"] button`),
  ]);
  out.after_revoke = await read(page);

  // Unlock UMBRA_UI_UNLOCK_USER.
  const unlock = env('UMBRA_UI_UNLOCK_USER');
  await Promise.all([
    page.waitForURL(/\/ui\/\?done=unlock/),
    page.click(`#users tr.user[data-user="${unlock}"] form[action$="/unlock"] button`),
  ]);
  out.after_unlock = await read(page);
  await page.screenshot({ path: `${shots}/dashboard-after-actions.png`, fullPage: true });
  out.console_errors = consoleErrors;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
