// Builds the npm package's files from the one copy of wsgate.js, which ships in the Python wheel
// (wsgate/static/wsgate.js): wsgate.mjs, the ES module, and LICENSE. `npm pack` runs it first.
//
// The source is already an ES module, so the build is a copy under a header. It fails when this
// package's version is not wsgate's, so that the npm package and the wheel that serves the same
// file never disagree on what version it is.

import { readFileSync, writeFileSync } from "node:fs";

const here = new URL(".", import.meta.url);
const root = new URL("..", here);
const read = (path) => readFileSync(new URL(path, root), "utf8");

const about = read("wsgate/__about__.py").match(/^__version__ = "([^"]+)"$/m);
const { version } = JSON.parse(read("js/package.json"));
if (about === null || about[1] !== version) {
  console.error(
    `js/package.json has version ${version}, wsgate/__about__.py ${about && about[1]}: ` +
      "give both the same version.",
  );
  process.exit(1);
}

const header =
  `// @wsgate/client ${version}: built by js/build.mjs from wsgate/static/wsgate.js ` +
  "(wsgate on PyPI); edit that file, not this one.\n";
writeFileSync(new URL("wsgate.mjs", here), header + read("wsgate/static/wsgate.js"));
writeFileSync(new URL("LICENSE", here), read("LICENSE"));
console.log(`built js/wsgate.mjs and js/LICENSE for @wsgate/client ${version}`);
