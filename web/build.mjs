// Bundles the web client into web/dist: app.js (TypeScript, with the
// generated code and the npm packages it imports), index.html and
// style.css as they are. The output is checked in and must not depend on
// the machine, so no source maps with absolute paths and no timestamps.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const dist = join(web, "dist");
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [join(web, "app", "main.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  logLevel: "warning",
});
for (const file of ["index.html", "style.css"]) {
  await copyFile(join(web, "app", file), join(dist, file));
}
