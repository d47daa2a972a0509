/**
 * The conformance, property, bad-input and events suites again, on a Redis Cluster
 * (CYCLES_TEST_REDIS_CLUSTER_URLS): every script must keep its keys in one slot.
 */
import { rerunSuites } from './suites.js';

rerunSuites('redis-cluster', ['conformance', 'property', 'input', 'events']);
