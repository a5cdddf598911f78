"""The read models: SQL tables, the projection runner that keeps them, and the read side that
answers queries from them."""
