// @ts-check
// The production build (`npm run build`, run before every `npm start` and `npm run worker`):
//  1. transpiles every module of src/ to dist/ with esbuild, one file per module and the same
//     folder layout, so paths computed from import.meta.url (config.ts, db/migrate.ts,
//     engine/expression-pool.ts) resolve to the same places from src (tsx) and from dist (node);
//  2. prepares the embedded database's image (dist/embedded-image/): a PGlite data directory
//     already initialised and migrated, which a new embedded data directory starts as a copy of
//     instead of running initdb and every migration (src/db/embedded.ts). It is rebuilt only when
//     its key (PGlite's version and the migrations) changes, so a build is usually well under a second.
//     Not with AUTONODE_BUILD_EMBEDDED_IMAGE=false or DATABASE_URL set (see below).
// Plain JavaScript, so that building needs neither tsx nor TypeScript.
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const backendRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sourceRoot = path.join(backendRoot, 'src');
const outputRoot = path.join(backendRoot, 'dist');
/** Kept across builds: dist/ entries the transpile step does not own. */
const preservedEntries = new Set(['embedded-image']);

const started = performance.now();
const entryPoints = (await readdir(sourceRoot, { recursive: true }))
  .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
  .map((file) => path.join(sourceRoot, file));

const result = await build({
  entryPoints,
  outdir: outputRoot,
  outbase: sourceRoot,
  bundle: false,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  write: false,
  logLevel: 'warning',
});

// Each file is replaced by a rename, and only when it changed: a server starting from dist while
// another build runs (two `npm start` at once, a test run beside a shell) never reads half a file.
const emitted = new Set();
let written = 0;
for (const file of result.outputFiles) {
  emitted.add(file.path);
  const current = await readFile(file.path).catch(() => undefined);
  if (current && Buffer.compare(current, file.contents) === 0) continue;
  await mkdir(path.dirname(file.path), { recursive: true });
  const temporary = `${file.path}.${process.pid}.tmp`;
  await writeFile(temporary, file.contents);
  await rename(temporary, file.path);
  written++;
}

// Modules whose source was deleted or moved must not stay importable from dist.
let removed = 0;
for (const entry of await readdir(outputRoot, { recursive: true, withFileTypes: true })) {
  const relative = path.relative(outputRoot, path.join(entry.parentPath, entry.name));
  if (!entry.isFile() || preservedEntries.has(relative.split(path.sep)[0] ?? '')) continue;
  const file = path.join(outputRoot, relative);
  if (!emitted.has(file) && /\.js(\.map)?$/.test(file)) {
    await rm(file);
    removed++;
  }
}
const transpiledMs = Math.round(performance.now() - started);

// The image serves only the embedded database (no DATABASE_URL) and takes initdb and every
// migration (about 15 s) when its key changed: it is skipped where it cannot be used (the
// Dockerfile's build, where production refuses the embedded database: it sets
// AUTONODE_BUILD_EMBEDDED_IMAGE=false; any build with DATABASE_URL set, such as npm start's prestart
// against a server). One that fails to build is a warning, never a failed build: an embedded start
// without an image runs initdb and the migrations itself.
const skipImage =
  process.env.AUTONODE_BUILD_EMBEDDED_IMAGE === 'false'
    ? 'skipped (AUTONODE_BUILD_EMBEDDED_IMAGE=false)'
    : process.env.DATABASE_URL
      ? 'skipped (DATABASE_URL is set)'
      : undefined;
let imageOutcome = skipImage;
if (!imageOutcome) {
  try {
    /** @type {typeof import('../src/db/embedded.js')} */
    const embedded = await import(pathToFileURL(path.join(outputRoot, 'db', 'embedded.js')).href);
    const image = await embedded.prepareEmbeddedImage();
    imageOutcome = image.created ? `created in ${image.tookMs} ms` : 'up to date';
  } catch (error) {
    imageOutcome = 'not built (see the warning above)';
    process.stderr.write(
      `build: warning: the embedded database's image could not be prepared; a new embedded data directory will run initdb and the migrations instead:\n` +
        `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
  }
}

process.stdout.write(
  `build: ${entryPoints.length} modules to dist/ in ${transpiledMs} ms (${written} written, ${removed} removed); embedded image ${imageOutcome}\n`,
);
