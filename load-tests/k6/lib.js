// Shared helpers for the k6 scenarios. Everything talks to the gateway only.
// BASE_URL (default http://127.0.0.1:8000): the gateway started by
// `cargo run --release --bin stack`.
import http from 'k6/http';
import { check } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');

// Load goes to this machine only, unless ALLOW_REMOTE=1.
if (!/^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/.test(BASE_URL) && __ENV.ALLOW_REMOTE !== '1') {
  throw new Error(`BASE_URL ${BASE_URL} is not on this machine; set ALLOW_REMOTE=1 to allow it`);
}

// Amounts are decimals on the wire. By default they are sent as JSON strings
// ("19.99"), which a Decimal field accepts; AMOUNT_AS=number sends 19.99.
export function amount(value) {
  const s = Number(value).toFixed(2);
  return __ENV.AMOUNT_AS === 'number' ? Number(s) : s;
}

export const JSON_PARAMS = { headers: { 'Content-Type': 'application/json' } };

export function params(name, extra) {
  return Object.assign({}, JSON_PARAMS, { tags: { name } }, extra || {});
}

// A run-unique prefix so repeated runs against the same stack do not collide.
export function runId() {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export function orderBody(customerId, productId, quantity, unitPrice) {
  return {
    customer_id: customerId,
    product_id: productId,
    quantity,
    total_amount: amount(quantity * unitPrice),
  };
}

export function parse(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

// Seeds a product with stock through PUT /inventory/products/{id}.
export function seedProduct(productId, stock) {
  const res = http.put(`${BASE_URL}/inventory/products/${productId}`,
    JSON.stringify({ stock }), params('PUT /inventory/products/{id}'));
  check(res, { 'seed product: 2xx': (r) => r.status >= 200 && r.status < 300 });
  return res;
}

// The seed's user journey: create an order, read it back, run a saga.
// Returns true when every step passed its checks.
export function journey(customerId, productId) {
  let ok = true;
  const body = orderBody(customerId, productId, 1, 19.99);

  const created = http.post(`${BASE_URL}/order/orders`, JSON.stringify(body), params('POST /order/orders'));
  const order = parse(created);
  ok = check(created, {
    'create order: 201': (r) => r.status === 201,
    'create order: has id': () => !!(order && order.id),
    'create order: pending': () => !!(order && order.status === 'pending'),
  }) && ok;

  if (order && order.id) {
    const read = http.get(`${BASE_URL}/order/orders/${order.id}`, params('GET /order/orders/{id}'));
    const got = parse(read);
    ok = check(read, {
      'read order: 200': (r) => r.status === 200,
      'read order: same id': () => !!(got && got.id === order.id),
    }) && ok;
  } else {
    ok = false;
  }

  const saga = http.post(`${BASE_URL}/saga/execute`, JSON.stringify(body), params('POST /saga/execute'));
  const result = parse(saga);
  ok = check(saga, {
    'saga: 2xx': (r) => r.status >= 200 && r.status < 300,
    'saga: completed': () => !!(result && result.status === 'completed'),
    'saga: has order_id': () => !!(result && result.order_id),
  }) && ok;
  return ok;
}
