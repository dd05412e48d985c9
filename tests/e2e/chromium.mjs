// How the browser tests start Chromium: Debian's /usr/bin/chromium (never a downloaded
// browser), headless, in a fresh profile, through the playwright-core the caller resolved
// from clients/js's devDependencies. `options` are playwright's, merged over these.
export function launchChromium(chromium, userDataDir, options = {}) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    ...options,
  });
}
