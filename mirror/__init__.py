"""The service mirror: Link resources turned into local mirror objects.

For each Link (`links.multicluster.linkerd.io`) in its namespace, the mirror
controller reads the target cluster through the Link's credentials Secret
and keeps, in the local (source) cluster, the objects that make the target's
exported Services reachable: gateway-mode mirrors with their Endpoints,
remote-discovery mirrors, and federated Services. It never imports the gRPC
side (`destination.api`, `destination.streams`, ...): it shares discovery's
kubeconfig loading, transport and watches, and the operations side
(admin server, logs).

Modules, from the inside out:

* `links` - a Link resource as a validated, typed record;
* `selectors` - Link label selectors ("empty matches nothing") and their text form;
* `naming`, `metadata` - names, labels, annotations and ports of mirror objects;
* `remote` - what the target cluster's Services and EndpointSlices say, slim;
* `desired` - the local objects a Link should own, as a pure function of the above;
* `federation` - shared `<svc>-federated` Services: membership merging;
* `objects` - our objects as the local cluster holds them, and what to do to them;
* `local` - the local cluster's Links, credentials, namespaces and our objects, watched.
"""
