-- The workbench searches returns by order id, customer phone (E.164, exact), tracking number and status,
-- each as cursor pages in (created_at, id) order: one index per filter, ending in the page order.
CREATE INDEX returns_by_order ON returns (order_id, created_at, id);
CREATE INDEX returns_by_phone ON returns ((customer ->> 'phone'), created_at, id);
CREATE INDEX returns_by_tracking ON returns (tracking_no, created_at, id) WHERE tracking_no IS NOT NULL;
CREATE INDEX returns_by_status ON returns (status, created_at, id);
