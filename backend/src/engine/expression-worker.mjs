// Entry of an expression worker process when the service runs from src/ (tsx, vitest): the child
// starts without the parent's loader flags (it gets its own heap flags only, and under vitest the
// parent's loader is not a Node loader), so it loads its module through tsx's scoped import. The
// build (dist/) forks its own engine/expression-worker.js instead and never loads tsx.
import { tsImport } from 'tsx/esm/api';

await tsImport('./expression-worker.ts', import.meta.url);
