// The seed's user journey under load: create an order, read it, run a saga.
//   k6 run load-tests/k6/journey.js
//   VUS=20 DURATION=1m k6 run load-tests/k6/journey.js
// Thresholds below; k6 exits 99 when one fails.
import { Counter, Trend } from 'k6/metrics';
import { journey, runId, seedProduct } from './lib.js';

const VUS = Number(__ENV.VUS || 10);
const DURATION = __ENV.DURATION || '30s';

const journeysOk = new Counter('journeys_ok');
const journeysFailed = new Counter('journeys_failed');
const journeyTime = new Trend('journey_duration', true);

export const options = {
  scenarios: {
    journey: {
      executor: 'ramping-vus',
      startVUs: 1,
      stages: [
        { duration: '5s', target: VUS },
        { duration: DURATION, target: VUS },
        { duration: '5s', target: 0 },
      ],
      gracefulRampDown: '10s',
      gracefulStop: '10s',
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:POST /order/orders}': ['p(95)<200', 'p(99)<500'],
    'http_req_duration{name:GET /order/orders/{id}}': ['p(95)<100', 'p(99)<300'],
    'http_req_duration{name:POST /saga/execute}': ['p(95)<800', 'p(99)<2000'],
    journeys_failed: ['count<1'],
    journey_duration: ['p(95)<1000'],
  },
};

export function setup() {
  const productId = `journey-prod-${runId()}`;
  // Enough stock that no saga is compensated for lack of it.
  seedProduct(productId, 10000000);
  return { productId };
}

export default function (data) {
  const start = Date.now();
  const ok = journey(`journey-cust-${__VU}`, data.productId);
  journeyTime.add(Date.now() - start);
  (ok ? journeysOk : journeysFailed).add(1);
}
