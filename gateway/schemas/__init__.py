"""Topics as contracts: JSON Schemas per topic, versioned under compatibility rules,
checked on produce, and described as AsyncAPI (docs/schemas.md)."""
