"""Understanding the message: intent classification, routing rules, follow-up condensing, flow slots."""
