"""The domain layer: state machines and the rules that go with them. Pure Python, no SQL."""
