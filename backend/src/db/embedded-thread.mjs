// Entry of the embedded database's worker thread when the service runs from src/ (tsx, vitest):
// the thread starts without loader flags, so it loads its module through tsx's scoped import.
// The build (dist/) starts its own db/embedded-thread.js instead and never loads tsx.
import { tsImport } from 'tsx/esm/api';

await tsImport('./embedded-thread.ts', import.meta.url);
