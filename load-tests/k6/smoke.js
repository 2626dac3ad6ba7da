// Smoke test: every route through the gateway once, with checks.
//   k6 run load-tests/k6/smoke.js           (BASE_URL=http://127.0.0.1:8000)
// Exits non-zero (99) when any check fails (threshold checks rate==1).
import http from 'k6/http';
import { check, group, sleep } from 'k6';
import { BASE_URL, amount, orderBody, params, parse, runId } from './lib.js';

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    http_req_duration: ['p(99)<2000'],
  },
};

export default function () {
  const id = runId();
  const productId = `smoke-prod-${id}`;
  const customerId = `smoke-cust-${id}`;
  let order = null;
  let payment = null;
  let saga = null;

  group('inventory', () => {
    const put = http.put(`${BASE_URL}/inventory/products/${productId}`, JSON.stringify({ stock: 100 }),
      params('PUT /inventory/products/{id}'));
    check(put, { 'PUT /inventory/products/{id}: 2xx': (r) => r.status >= 200 && r.status < 300 });

    const get = http.get(`${BASE_URL}/inventory/products/${productId}`, params('GET /inventory/products/{id}'));
    const p = parse(get);
    check(get, {
      'GET /inventory/products/{id}: 200': (r) => r.status === 200,
      'GET /inventory/products/{id}: stock 100': () => !!p && Number(p.stock) === 100,
    });

    const res = http.post(`${BASE_URL}/inventory/reservations`, JSON.stringify({ product_id: productId, quantity: 2 }),
      params('POST /inventory/reservations'));
    const rsv = parse(res);
    check(res, {
      'POST /inventory/reservations: 201': (r) => r.status === 201,
      'POST /inventory/reservations: has id': () => !!(rsv && rsv.id),
    });
    if (rsv && rsv.id) {
      const del = http.del(`${BASE_URL}/inventory/reservations/${rsv.id}`, null, params('DELETE /inventory/reservations/{id}'));
      check(del, { 'DELETE /inventory/reservations/{id}: 2xx': (r) => r.status >= 200 && r.status < 300 });
    }

    const missing = http.get(`${BASE_URL}/inventory/products/smoke-missing-${id}`,
      params('GET /inventory/products/{missing}', { responseCallback: http.expectedStatuses(404) }));
    check(missing, { 'GET unknown product: 404': (r) => r.status === 404 });
  });

  group('order', () => {
    const created = http.post(`${BASE_URL}/order/orders`, JSON.stringify(orderBody(customerId, productId, 1, 19.99)),
      params('POST /order/orders'));
    order = parse(created);
    check(created, {
      'POST /order/orders: 201': (r) => r.status === 201,
      'POST /order/orders: status pending': () => !!(order && order.status === 'pending'),
    });
    if (order && order.id) {
      const got = http.get(`${BASE_URL}/order/orders/${order.id}`, params('GET /order/orders/{id}'));
      check(got, { 'GET /order/orders/{id}: 200': (r) => r.status === 200 });
    }
    const list = http.get(`${BASE_URL}/order/orders`, params('GET /order/orders'));
    check(list, { 'GET /order/orders: 200': (r) => r.status === 200 });

    const bad = http.post(`${BASE_URL}/order/orders`,
      JSON.stringify(orderBody(customerId, productId, 0, 19.99)),
      params('POST /order/orders (invalid)', { responseCallback: http.expectedStatuses({ min: 400, max: 422 }) }));
    check(bad, { 'POST /order/orders quantity 0: 4xx': (r) => r.status >= 400 && r.status < 500 });
  });

  group('payment', () => {
    const orderId = order && order.id ? order.id : `smoke-order-${id}`;
    const res = http.post(`${BASE_URL}/payment/payments`, JSON.stringify({ order_id: orderId, amount: amount(19.99) }),
      params('POST /payment/payments', { headers: { 'Content-Type': 'application/json', 'Idempotency-Key': `smoke-${id}` } }));
    payment = parse(res);
    check(res, {
      'POST /payment/payments: 201': (r) => r.status === 201,
      'POST /payment/payments: has id': () => !!(payment && payment.id),
    });
    if (payment && payment.id) {
      const got = http.get(`${BASE_URL}/payment/payments/${payment.id}`, params('GET /payment/payments/{id}'));
      check(got, { 'GET /payment/payments/{id}: 200': (r) => r.status === 200 });
    }
  });

  group('saga', () => {
    const res = http.post(`${BASE_URL}/saga/execute`, JSON.stringify(orderBody(customerId, productId, 1, 19.99)),
      params('POST /saga/execute'));
    saga = parse(res);
    check(res, {
      'POST /saga/execute: 2xx': (r) => r.status >= 200 && r.status < 300,
      'POST /saga/execute: completed': () => !!(saga && saga.status === 'completed'),
    });
    if (saga && saga.saga_id) {
      const got = http.get(`${BASE_URL}/saga/${saga.saga_id}`, params('GET /saga/{id}'));
      check(got, { 'GET /saga/{id}: 200': (r) => r.status === 200 });
    }
  });

  group('notification', () => {
    const orderId = saga && saga.order_id ? saga.order_id : (order && order.id) || `smoke-order-${id}`;
    // Events are delivered asynchronously: poll for up to ~3 s.
    let res = null;
    let list = [];
    for (let i = 0; i < 15; i += 1) {
      res = http.get(`${BASE_URL}/notification/notifications?order_id=${encodeURIComponent(orderId)}`,
        params('GET /notification/notifications'));
      const body = parse(res);
      list = Array.isArray(body) ? body : (body && body.notifications) || [];
      if (res.status !== 200 || list.length > 0) break;
      sleep(0.2);
    }
    check(res, {
      'GET /notification/notifications: 200': (r) => r.status === 200,
      'GET /notification/notifications: JSON': (r) => parse(r) !== null,
      'GET /notification/notifications: the saga order has notifications': () => list.length > 0,
    });
  });

  group('gateway', () => {
    const res = http.get(`${BASE_URL}/no-such-route-${id}`,
      params('GET unknown route', { responseCallback: http.expectedStatuses(404) }));
    const body = parse(res);
    check(res, {
      'unknown route: 404': (r) => r.status === 404,
      'unknown route: JSON error from the gateway': () => !!(body && body.error),
      'X-Request-Id returned': (r) => !!r.headers['X-Request-Id'],
    });
  });
}
