"""The WasmEngine REST API (`/function/...`), for clients written against it.

`function_image` names module bytes the platform already holds: a blob digest
(`sha256:...`, from an earlier deploy or `POST /api/v1/blobs`) or a file under the data
dir's `import/` folder. OCI image references come later. `wasi_cap: false` refuses a
module that imports WASI. `/function/invoke` is served by the hot path (api/hotpath.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from wasmlet.api.access import caller, own_name, shown, visible
from wasmlet.api.deps import get_state
from wasmlet.api.state import AppState
from wasmlet.auth.keys import Principal
from wasmlet.errors import InvalidRequest, NotFound
from wasmlet.names import DEFAULT_NAMESPACE, check_name
from wasmlet.registry.blobs import is_digest
from wasmlet.spec import SpecUpdate

router = APIRouter(prefix="/function", tags=["wasmengine-compat"])
State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(caller)]


class DeployBody(BaseModel):
    function_name: str
    function_image: str = Field(
        description="sha256:<digest> of a stored blob, or a file in import/"
    )
    wasi_cap: bool = False


class NameBody(BaseModel):
    function_name: str


class CompatFunction(BaseModel):
    function_name: str
    digest: str
    abi: str
    exports: dict[str, Any] = {}


class CompatMessage(BaseModel):
    function_name: str
    message: str
    digest: str | None = None


class CompatList(BaseModel):
    functions: list[CompatFunction]


def _image_bytes(state: AppState, principal: Principal, image: str) -> bytes:
    """The bytes `function_image` names. Blobs are shared by content across namespaces, so
    a tenant may name only bytes it holds (uploaded, or in one of its versions), and gets
    for any other digest the answer a missing blob gets. The import/ folder is the
    operator's staging area (keys of the `default` namespace)."""
    operators = principal.namespace == DEFAULT_NAMESPACE
    if is_digest(image):
        if not operators and not state.repo.may_use_blob(principal.namespace, image):
            raise NotFound(f"blob {image} not found")
        return state.blobs.get(image)
    if not operators:
        raise InvalidRequest(
            "function_image from the import/ folder takes an operator key; upload the module "
            "with POST /api/v1/blobs and name its digest"
        )
    root = (state.settings.data_dir / "import").resolve()
    candidate = (root / image).resolve()
    if not candidate.is_relative_to(root) or image.startswith("/"):
        raise InvalidRequest("function_image must name a file inside the import/ folder")
    if not candidate.is_file():
        raise NotFound(f"no file {image!r} in the import/ folder")
    return Path(candidate).read_bytes()


@router.post("/deploy", response_model=CompatMessage, summary="WasmEngine: deploy")
def deploy(state: State, principal: Caller, body: DeployBody) -> CompatMessage:
    name = own_name(principal, check_name(body.function_name))
    data = _image_bytes(state, principal, body.function_image)
    if not body.wasi_cap:
        candidate = state.deployer.parse(data)
        wasi = [
            f"{i.module}.{i.name}" for i in candidate.info.imports if i.module.startswith("wasi")
        ]
        if wasi:
            raise InvalidRequest(f"module imports WASI ({wasi[0]}, ...) but wasi_cap is false")
    view, _ = state.deployer.deploy(name, data, SpecUpdate())
    digest = view.active_version.digest if view.active_version else None
    return CompatMessage(function_name=shown(name), message="deployed", digest=digest)


@router.post("/delete", response_model=CompatMessage, summary="WasmEngine: delete")
def delete(state: State, principal: Caller, body: NameBody) -> CompatMessage:
    name = own_name(principal, check_name(body.function_name))
    state.deployer.delete(name)
    return CompatMessage(function_name=shown(name), message="deleted")


@router.get("/list", response_model=CompatList, summary="WasmEngine: list")
def list_functions(state: State, principal: Caller) -> CompatList:
    return CompatList(
        functions=[
            CompatFunction(
                function_name=shown(f.name), digest=v.digest, abi=v.abi, exports=v.exports
            )
            for f in state.repo.list_functions()
            if (v := f.active_version) is not None and visible(principal, f.name)
        ]
    )


@router.post("/query", response_model=CompatFunction, summary="WasmEngine: query")
def query(state: State, principal: Caller, body: NameBody) -> CompatFunction:
    v = state.repo.active_version(own_name(principal, check_name(body.function_name)))
    return CompatFunction(
        function_name=body.function_name, digest=v.digest, abi=v.abi, exports=v.exports
    )
