// Entry of an expression worker process. The service runs TypeScript through tsx, but the child
// starts without the parent's loader flags (it gets its own heap flags only, and under vitest the
// parent's loader is not a Node loader), so it loads its module through tsx's scoped import.
import { tsImport } from 'tsx/esm/api';

await tsImport('./expression-worker.ts', import.meta.url);
