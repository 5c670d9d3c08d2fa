from django.db import transaction

from tenants.models import OFFLINE_LABEL, ApiKey, LanguageModel, Tenant
from tenants.storage import delete_quietly, delete_tenant_files

OFFLINE_MODEL_ID = "offline"


def ensure_offline_model() -> LanguageModel:
    """The catalog entry of the built-in offline model, created on first use."""
    model, _ = LanguageModel.objects.get_or_create(
        pk=OFFLINE_MODEL_ID,
        defaults={
            "display_name": OFFLINE_LABEL,
            "provider": LanguageModel.Provider.OFFLINE,
            "provider_model_id": "offline-1",
        },
    )
    return model


@transaction.atomic
def create_tenant_with_key(
    tenant_id: str, name: str, *, system_prompt: str = "", model_id: str = ""
) -> tuple[Tenant, str]:
    """A tenant and its first API key; returns the raw key, which is shown once."""
    model = (
        LanguageModel.objects.get(pk=model_id) if model_id and model_id != OFFLINE_MODEL_ID else ensure_offline_model()
    )
    tenant = Tenant.objects.create(id=tenant_id, name=name, system_prompt=system_prompt, default_model=model)
    _, raw_key = ApiKey.issue(f"{tenant_id} key", tenant=tenant)
    return tenant, raw_key


def delete_tenant(tenant: Tenant) -> None:
    """Delete a tenant with everything it owns: its rows, then (once that is committed) its stored files."""
    tenant_id = tenant.pk  # read now: Django sets the instance's pk to None when it deletes the row
    with transaction.atomic():
        Tenant.objects.filter(pk=tenant_id).delete()
        transaction.on_commit(lambda: delete_quietly(delete_tenant_files, tenant_id))
