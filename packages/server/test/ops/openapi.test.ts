/**
 * The OpenAPI document and the /docs page are built on first use (ops/openapi.ts), from a private
 * instance that replays the registered routes. These check what that must not change: the
 * document lists every route once (never the page's own paths), is the same on every request,
 * and the page's paths answer as the documentation plugins do, with this server's 404 envelope
 * for anything missing.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NO_LIMITS, startOps } from './support.js';

describe('OpenAPI on first use', () => {
  test('the document covers the routes, not the page, and is stable across requests', async () => {
    const s = await startOps({ ...NO_LIMITS });
    try {
      const [a, b] = await Promise.all([fetch(`${s.url}/openapi.json`), fetch(`${s.url}/openapi.json`)]);
      assert.equal(a.status, 200);
      const first = await a.text();
      assert.equal(await b.text(), first, 'concurrent first requests share one document');
      const doc = JSON.parse(first) as { paths: Record<string, Record<string, unknown>> };
      assert.ok(doc.paths['/v1/reservations']?.post, 'runtime routes');
      assert.ok(doc.paths['/v1/admin/tenants']?.post, 'governance routes');
      assert.ok(doc.paths['/openapi.json']?.get, 'the document itself');
      assert.deepEqual(Object.keys(doc.paths).filter((p) => p.startsWith('/docs')), [], 'the page is not documented');
      assert.ok(Object.values(doc.paths).every((ops) => !('head' in ops)), 'HEAD twins are not documented');
      const again = await fetch(`${s.url}/docs/json`);
      assert.equal(await again.text(), first, '/docs/json is the same document');
    } finally {
      await s.close();
    }
  });

  test('the page answers GET and HEAD, redirects, and 404s in the protocol envelope', async () => {
    const s = await startOps({ ...NO_LIMITS });
    try {
      const page = await fetch(`${s.url}/docs`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      assert.ok(page.headers.get('content-security-policy'), 'static CSP of the page');
      assert.ok(page.headers.get('x-request-id'), 'this server stamps its ids');
      const html = await page.text();
      assert.match(html, /swagger/i);

      const head = await fetch(`${s.url}/docs`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(html)), 'HEAD gives the length of the GET body');

      const redirect = await fetch(`${s.url}/docs/static/index.html`, { redirect: 'manual' });
      assert.equal(redirect.status, 302);
      assert.equal(redirect.headers.get('location'), '/docs/');
      assert.equal(redirect.headers.get('content-type'), null, 'an empty redirect has no body type');

      const css = await fetch(`${s.url}/docs/static/swagger-ui.css`);
      assert.equal(css.status, 200);
      assert.match(css.headers.get('content-type') ?? '', /text\/css/);
      assert.ok((await css.arrayBuffer()).byteLength > 1000);

      for (const path of ['/docs/static/missing.js', '/docs/missing']) {
        const r = await fetch(`${s.url}${path}`, { headers: { 'x-request-id': 'docs-404' } });
        assert.equal(r.status, 404, path);
        const body = (await r.json()) as { error: string; request_id: string };
        assert.equal(body.error, 'NOT_FOUND', path);
        assert.equal(body.request_id, 'docs-404', path);
      }
      const post = await fetch(`${s.url}/docs`, { method: 'POST' });
      assert.equal(post.status, 404, 'the page is read-only');
    } finally {
      await s.close();
    }
  });
});
