/**
 * The conformance, property, bad-input, events, governance and webhook suites again, on
 * PostgreSQL (CYCLES_TEST_DATABASE_URL), each test server in a schema of its own. Left out: the
 * governance store test (it opens the SQLite file directly) and the CLI test (it is about the
 * CLI, not the store).
 */
import { rerunSuites } from './suites.js';

rerunSuites('postgres', ['conformance', 'property', 'input', 'events', 'governance', 'webhooks'], ['governance/store.test.ts', 'governance/cli.test.ts']);
