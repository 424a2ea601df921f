import { inject } from 'vitest';
import { createFileDatabase } from './file-database.js';

// Runs before each test file (vitest setupFiles): on a real server, the file's own database
// (test/file-database.ts), which helpers' databaseUrl() answers from here on. The global teardown
// drops it with the others.
const template = inject('fileDatabaseTemplate');
if (template) process.env.AUTONODE_TEST_FILE_DATABASE_URL = await createFileDatabase(inject('databaseUrl'), template);
