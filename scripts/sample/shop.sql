-- A small shop database for the README's demo: tables with identity, serial and generated
-- columns, a free-standing sequence, foreign keys, a view, a materialized view and indexes.
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');

CREATE TABLE customers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id    serial PRIMARY KEY,
    sku   text NOT NULL UNIQUE,
    title text NOT NULL,
    price numeric(10, 2) NOT NULL CHECK (price >= 0),
    tags  text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status      order_status NOT NULL DEFAULT 'new',
    placed_at   timestamptz NOT NULL,
    note        text
);

CREATE TABLE order_items (
    order_id   bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id integer NOT NULL REFERENCES products (id),
    qty        integer NOT NULL CHECK (qty > 0),
    unit_price numeric(10, 2) NOT NULL,
    total      numeric(12, 2) GENERATED ALWAYS AS (qty * unit_price) STORED,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE audit_log (
    at      timestamptz NOT NULL DEFAULT now(),
    payload jsonb
);

CREATE SEQUENCE invoice_no_seq START 1000;

CREATE INDEX orders_customer_idx ON orders (customer_id, placed_at DESC);
CREATE INDEX products_tags_idx ON products USING gin (tags);

CREATE VIEW paid_orders AS
    SELECT o.id, c.email, o.placed_at FROM orders o JOIN customers c ON c.id = o.customer_id
    WHERE o.status = 'paid';

INSERT INTO customers (email, name, created_at)
SELECT format('customer%s@example.com', g), format('Customer %s', g), timestamptz '2024-01-01' + g * interval '1 hour'
FROM generate_series(1, 5000) g;

INSERT INTO products (sku, title, price, tags)
SELECT format('SKU-%s', g), format('Product %s', g), (g % 97) + 0.99, ARRAY[format('tag%s', g % 7)]
FROM generate_series(1, 500) g;

INSERT INTO orders (customer_id, status, placed_at, note)
SELECT 1 + g % 5000, (ARRAY['new', 'paid', 'shipped']::order_status[])[1 + g % 3],
       timestamptz '2025-01-01' + g * interval '7 minutes', CASE WHEN g % 10 = 0 THEN 'gift; wrap it' END
FROM generate_series(1, 40000) g;

INSERT INTO order_items (order_id, product_id, qty, unit_price)
SELECT o, 1 + (o + k * 137) % 500, 1 + k, ((o * k) % 97) + 0.99
FROM generate_series(1, 40000) o, generate_series(1, 3) k;

INSERT INTO audit_log (payload)
SELECT jsonb_build_object('event', 'import', 'n', g) FROM generate_series(1, 1000) g;

DO $$ BEGIN PERFORM setval('invoice_no_seq', 4242); END $$;

CREATE MATERIALIZED VIEW revenue_by_status AS
    SELECT o.status, sum(i.total) AS revenue FROM orders o JOIN order_items i ON i.order_id = o.id GROUP BY o.status;
