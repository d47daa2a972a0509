/**
 * The conformance, property, bad-input, events, governance and webhook suites again, on one Redis
 * server (CYCLES_TEST_REDIS_URL), each test server under its own key prefix. Left out: the
 * governance store test (it opens the SQLite file directly) and the CLI test (it is about the
 * CLI, not the store, and costs minutes).
 */
import { rerunSuites } from './suites.js';

rerunSuites('redis', ['conformance', 'property', 'input', 'events', 'governance', 'webhooks'], ['governance/store.test.ts', 'governance/cli.test.ts']);
