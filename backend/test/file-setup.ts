import { afterAll, inject } from 'vitest';
import { createFileDatabase, dropFileDatabase } from './file-database.js';

// Runs before each test file (vitest setupFiles): on a real server, the file's own database
// (test/file-database.ts), which helpers' databaseUrl() answers from here on. Dropped after the
// file's last hook (file-level afterAll hooks run in reverse order: this one, registered first,
// runs last), with any connection a test left open.
const template = inject('fileDatabaseTemplate');
if (template) {
  const url = await createFileDatabase(inject('databaseUrl'), template);
  process.env.AUTONODE_TEST_FILE_DATABASE_URL = url;
  afterAll(async () => {
    await dropFileDatabase(inject('databaseUrl'), url);
  });
}
