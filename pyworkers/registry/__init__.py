"""Deployments in an OCI registry: push, pull, and follow a registry's tags.

* :func:`push_deployment` / :func:`pull_deployment` (:mod:`.artifact`): a deployment of the
  store as an OCI artifact (media types and layout: :mod:`pyworkers.registry.artifact`).
* :class:`RegistryFollower` (:mod:`.follower`): keeps a local store's workers at the
  deployments their tags name (``pyworkers serve --registry``).
* :class:`RegistryClient` (:mod:`.client`): the OCI distribution API over httpx; auth from
  the docker configuration (:mod:`.auth`) or explicit credentials; TLS verified, plain HTTP
  only for loopback registries.
* :func:`parse_reference` (:mod:`.reference`): ``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]``.

Every error is a :class:`RegistryError` (one line naming the registry, the object and the fix).
"""
from pyworkers.registry.artifact import (ARTIFACT_TYPE, MEDIA_TYPES, PullResult, PushResult,
                                         fetch_manifest, prepare_snapshot, pull_deployment,
                                         push_deployment)
from pyworkers.registry.auth import Credentials, credentials_for, docker_config_path
from pyworkers.registry.client import RegistryClient
from pyworkers.registry.errors import (DigestMismatch, NotFound, RegistryAuthError, RegistryError,
                                       RegistryUnreachable)
from pyworkers.registry.follower import RegistryFollower
from pyworkers.registry.reference import Reference, is_loopback, parse_reference

__all__ = ["ARTIFACT_TYPE", "MEDIA_TYPES", "PullResult", "PushResult", "fetch_manifest",
           "prepare_snapshot", "pull_deployment", "push_deployment", "Credentials",
           "credentials_for", "docker_config_path", "RegistryClient", "DigestMismatch",
           "NotFound", "RegistryAuthError", "RegistryError", "RegistryUnreachable",
           "RegistryFollower", "Reference", "is_loopback", "parse_reference"]
