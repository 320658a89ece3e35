"""Everything that puts events on deal-events: publisher, ticker, simulator."""
