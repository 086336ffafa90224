"""``img-search serve`` (``python -m img_search.serve``): load the tables once, then serve the API and the page."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from img_search.cli.errors import user_errors_exit
from img_search.cli.hydra_entry import hydra_entry

log = logging.getLogger("img_search")


@hydra_entry(config_path="pkg://img_search.config", config_name="serve")
def main(cfg: DictConfig) -> None:
    # the app, its models and the web server load once the config is composed (--help stays fast)
    import uvicorn

    from img_search.embedding.devices import pick_device
    from img_search.serve.app import ServeSettings, create_app
    from img_search.serve.catalog import load_catalog

    with user_errors_exit(cfg):
        specs = OmegaConf.to_container(cfg.tables, resolve=True) or {}
        catalog = load_catalog(
            specs,
            device=pick_device(str(cfg.device)),
            trust_remote_code=bool(cfg.get("trust_remote_code", False)),
        )
        settings = ServeSettings(
            default_k=int(cfg.k),
            max_k=int(cfg.max_k),
            max_upload_bytes=int(cfg.max_upload_bytes),
            max_upload_pixels=int(cfg.max_upload_pixels),
            thumbnail_size=int(cfg.thumbnail_size),
        )
        app = create_app(catalog, settings)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can search", cfg.host)
    host = f"[{cfg.host}]" if ":" in str(cfg.host) else cfg.host
    print(
        f"img_search: serving {', '.join(catalog.tables)} on http://{host}:{cfg.port}/", flush=True
    )
    try:
        uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level="warning")
    finally:
        catalog.close()
