// Spike: a steady trickle, a sudden 25x burst, then back; the gateway must keep
// answering (few errors, bounded latency) and recover after the burst.
//   k6 run load-tests/k6/spike.js
//   BASE_RATE=20 SPIKE_RATE=500 k6 run load-tests/k6/spike.js
// Mix: 70% product reads, 20% order creations, 10% sagas. Total run: ~70 s.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, orderBody, params, runId, seedProduct } from './lib.js';

const BASE_RATE = Number(__ENV.BASE_RATE || 20);
const SPIKE_RATE = Number(__ENV.SPIKE_RATE || 500);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: BASE_RATE,
      timeUnit: '1s',
      preAllocatedVUs: 50,
      maxVUs: Number(__ENV.MAX_VUS || 400),
      stages: [
        { duration: '20s', target: BASE_RATE },
        { duration: '5s', target: SPIKE_RATE }, // the spike
        { duration: '15s', target: SPIKE_RATE },
        { duration: '5s', target: BASE_RATE }, // back down
        { duration: '25s', target: BASE_RATE }, // recovery
      ],
      gracefulStop: '10s',
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.02'],
    checks: ['rate>0.98'],
    http_req_duration: ['p(95)<500', 'p(99)<1500'],
    // after the burst the latency must come back down
    'http_req_duration{phase:recovery}': ['p(95)<200'],
    dropped_iterations: ['count<' + Math.ceil(SPIKE_RATE * 2)],
  },
};

export function setup() {
  const productId = `spike-prod-${runId()}`;
  seedProduct(productId, 10000000);
  return { productId, t0: Date.now() };
}

export default function (data) {
  const elapsed = (Date.now() - data.t0) / 1000;
  const phase = elapsed < 20 ? 'before' : elapsed < 45 ? 'spike' : elapsed < 50 ? 'down' : 'recovery';
  const tags = { phase };
  const roll = Math.random();
  if (roll < 0.7) {
    const r = http.get(`${BASE_URL}/inventory/products/${data.productId}`,
      params('GET /inventory/products/{id}', { tags: { name: 'GET /inventory/products/{id}', phase } }));
    check(r, { 'product read: 200': (x) => x.status === 200 }, tags);
  } else if (roll < 0.9) {
    const r = http.post(`${BASE_URL}/order/orders`, JSON.stringify(orderBody(`spike-cust-${__VU}`, data.productId, 1, 9.99)),
      params('POST /order/orders', { tags: { name: 'POST /order/orders', phase } }));
    check(r, { 'order create: 201': (x) => x.status === 201 }, tags);
  } else {
    const r = http.post(`${BASE_URL}/saga/execute`, JSON.stringify(orderBody(`spike-cust-${__VU}`, data.productId, 1, 9.99)),
      params('POST /saga/execute', { tags: { name: 'POST /saga/execute', phase } }));
    check(r, { 'saga: 2xx': (x) => x.status >= 200 && x.status < 300 }, tags);
  }
}
