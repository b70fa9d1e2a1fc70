"""Thin HTTP routers: parse, call one service function, return a wire model."""
