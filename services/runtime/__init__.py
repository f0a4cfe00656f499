"""What every service shares: settings, logging, Kafka, Postgres, health and metrics."""
