// @ts-check
// PGlite alone, for the startup benchmark's reference (bench/startup.ts): opens the data directory
// PGLITE_DATA_DIR (initdb when it is new), answers one query, prints "open", and closes.
// Plain JavaScript run by plain node, so the reference pays no TypeScript loader.
import { PGlite } from '@electric-sql/pglite';

const dataDir = process.env.PGLITE_DATA_DIR;
if (!dataDir) throw new Error('usage: PGLITE_DATA_DIR=<data directory> node bench/startup-pglite.mjs');
const database = await PGlite.create({ dataDir });
await database.query('select 1');
process.stdout.write('open\n');
await database.close();
