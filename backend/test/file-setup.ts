import { inject } from 'vitest';
import { createFileDatabase, withConnection } from './file-database.js';
import { truncateAll } from './helpers.js';

// Runs before each test file (vitest setupFiles), so that every file starts on a migrated database
// holding no rows, as production's first start does: on a real server, the file's own database
// (test/file-database.ts), which helpers' databaseUrl() answers from here on, and the global
// teardown drops with the others; on the embedded server, which has one database for the whole
// run, that database emptied of the files before this one. Without it, an engine this file starts
// would also run, deliver and purge the earlier files' work (their queued runs, their messages to
// receivers long gone), and its timings would depend on which files ran first.
const template = inject('fileDatabaseTemplate');
if (template) process.env.AUTONODE_TEST_FILE_DATABASE_URL = await createFileDatabase(inject('databaseUrl'), template);
else await withConnection(inject('databaseUrl'), ({ db }) => truncateAll(db));
