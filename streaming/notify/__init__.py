"""Alerts delivered where operators already look: MQTT brokers (Home Assistant's conventions) and webhooks.

`settings` (the `notify:` config section), `messages` (pure message building), `outbox` (bounded, persisted in
the events database), `delivery` (a sink's thread: retries with backoff), `mqtt_sink` (paho-mqtt), `webhook_sink`
(urllib), `dispatcher` (the scorer's Notifier, called where events open, update and close).
"""
