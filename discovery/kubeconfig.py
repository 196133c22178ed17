"""Kubeconfigs from link Secrets: validated, then turned into an API client.

A link Secret is written by whoever can write Secrets in the controller
namespace, and the server acts on it with its own process. So only what a
remote link needs is accepted: inline certificates and keys, a bearer token,
or basic credentials. Rejected, with the reason in the cluster's status:
`exec` and `auth-provider` plugins (they would run a program inside the
destination server) and every field that names a local file (`tokenFile`,
`certificate-authority`, `client-certificate`, `client-key`): a file path
would let a Secret send the server's own service-account token, or any file it
can read, to an arbitrary address. Linkerd's controller accepts all of these.
"""

from __future__ import annotations

import ssl
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import ConfigException
from kubernetes_asyncio.config.kube_config import new_client_from_config_dict

# Each watch holds one connection; leave room for lists and relists.
CONNECTION_POOL = 32

_USER_FILE_FIELDS = ("tokenFile", "client-certificate", "client-key")
_USER_PLUGINS = ("exec", "auth-provider")


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used, with a reason fit for an operator."""


def _named(entries: Any, name: str, section: str) -> dict[str, Any]:
    if not isinstance(entries, list):
        raise KubeconfigError(f"{section} is missing or not a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section.rstrip("s"))
            if not isinstance(body, dict):
                raise KubeconfigError(f"{section[:-1]} {name!r} has no {section[:-1]} section")
            return body
    raise KubeconfigError(f"{section[:-1]} {name!r} is not defined")


def parse_kubeconfig(data: bytes) -> dict[str, Any]:
    """The kubeconfig as a dict, or KubeconfigError saying what is wrong with it."""
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as err:
        raise KubeconfigError(f"not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise KubeconfigError("not a kubeconfig (expected a YAML mapping)")
    context_name = config.get("current-context")
    if not context_name:
        contexts = config.get("contexts")
        if isinstance(contexts, list) and len(contexts) == 1 and isinstance(contexts[0], dict):
            context_name = contexts[0].get("name")
    if not isinstance(context_name, str) or not context_name:
        raise KubeconfigError("no current-context, and not exactly one context")
    context = _named(config.get("contexts"), context_name, "contexts")
    cluster = _named(config.get("clusters"), str(context.get("cluster", "")), "clusters")
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"cluster server {server!r} is not an http(s) URL")
    if cluster.get("certificate-authority"):
        raise KubeconfigError(
            "certificate-authority names a local file; embed certificate-authority-data"
        )
    user_name = context.get("user")
    if user_name:
        user = _named(config.get("users"), str(user_name), "users")
        for plugin in _USER_PLUGINS:
            if plugin in user:
                raise KubeconfigError(f"user {plugin!r} plugins are not allowed in link Secrets")
        for key in _USER_FILE_FIELDS:
            if user.get(key):
                raise KubeconfigError(f"user field {key!r} names a local file; embed the data")
    config["current-context"] = context_name
    return config


def server_of(config: dict[str, Any]) -> str:
    """The API server URL of a kubeconfig that passed `parse_kubeconfig`."""
    context = _named(config["contexts"], config["current-context"], "contexts")
    cluster = _named(config["clusters"], str(context.get("cluster", "")), "clusters")
    return str(cluster["server"])


async def client_from_kubeconfig(data: bytes) -> tuple[ApiClient, str]:
    """A dedicated API client (never the process default) and the server it talks to."""
    config = parse_kubeconfig(data)
    try:
        client = await new_client_from_config_dict(config_dict=config)
    except ssl.SSLError as err:
        raise KubeconfigError(f"certificate data is not valid PEM: {err}") from None
    except (ConfigException, ValueError, TypeError, KeyError, OSError) as err:
        raise KubeconfigError(f"unusable: {err}") from None
    client.configuration.connection_pool_maxsize = CONNECTION_POOL
    return client, server_of(config)
