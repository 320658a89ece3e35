-- Which insights each flood-control message carried (consumer/notifier/outbox.py), written in
-- the transaction that puts the message in notify_outbox. The notification log keys a message
-- by its message id (notifications.insight_id = message_id, lifecycle = the message's kind), so
-- this is how the usefulness report (consumer/notifier/usefulness.py) and the answer metrics
-- count an insight that went out only inside an alert or a digest.
CREATE TABLE IF NOT EXISTS notify_message_items (
    message_id   text NOT NULL,
    insight_id   text NOT NULL,
    lifecycle    text NOT NULL,
    rule         text NOT NULL,
    workspace_id text NOT NULL,
    deal_id      text NOT NULL,
    CONSTRAINT notify_message_items_pkey PRIMARY KEY (message_id, insight_id, lifecycle)
);

CREATE INDEX IF NOT EXISTS notify_message_items_insight ON notify_message_items (insight_id);
