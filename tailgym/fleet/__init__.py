"""Fleets: many engine replicas behind a router (``tailgym.simulate(..., replicas=N)``)."""
from .routers import ROUTERS, RouterSpec, get_router

__all__ = ["ROUTERS", "RouterSpec", "get_router"]
