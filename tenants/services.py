from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants.models import OFFLINE_LABEL, ApiKey, LanguageModel, ModelPrice, Tenant
from tenants.storage import delete_quietly, delete_tenant_files

OFFLINE_MODEL_ID = "offline"


@transaction.atomic
def save_language_model(model: LanguageModel) -> LanguageModel:
    """Save a catalog entry; prices that differ from the price in effect become a new ModelPrice, from now.

    The one way the catalog is written (admin, API, `loadmodels`, the offline model), so the history
    holds every price a call is charged at. A save that leaves the prices as they were read records
    nothing; if a scheduled price has come into effect since they were read, the list takes it on
    instead, so an edit of the name never puts an outdated price back.
    """
    model.forget_prefetched_prices()
    now = timezone.now()
    in_effect = model.price_in_effect(now)
    if not model.prices_edited and in_effect is not None and in_effect.price_values() != model.price_values():
        model.show_price_in_effect()
    model.save(force_insert=model._state.adding)
    if in_effect is None or in_effect.price_values() != model.price_values():
        # The first price of a model is in effect from its creation, like the migration's.
        since = now if model.prices.exists() else model.created_at
        ModelPrice.objects.create(model=model, effective_from=since, **model.prices_by_field())
    return model


def ensure_offline_model() -> LanguageModel:
    """The catalog entry of the built-in offline model, created on first use."""
    model = LanguageModel.objects.filter(pk=OFFLINE_MODEL_ID).first()
    if model is not None:
        return model
    offline = LanguageModel(
        pk=OFFLINE_MODEL_ID,
        display_name=OFFLINE_LABEL,
        provider=LanguageModel.Provider.OFFLINE,
        provider_model_id="offline-1",
    )
    try:
        return save_language_model(offline)
    except IntegrityError:
        # Another process created it between the read and the insert (get_or_create's race).
        return LanguageModel.objects.get(pk=OFFLINE_MODEL_ID)


@transaction.atomic
def create_tenant_with_key(tenant_id: str, name: str, *, model_id: str = "") -> tuple[Tenant, str]:
    """A tenant and its first API key; returns the raw key, which is shown once. Its default agent profile
    is made on first use (`agents.services.default_profile`)."""
    model = (
        LanguageModel.objects.get(pk=model_id) if model_id and model_id != OFFLINE_MODEL_ID else ensure_offline_model()
    )
    tenant = Tenant.objects.create(id=tenant_id, name=name, default_model=model)
    _, raw_key = ApiKey.issue(f"{tenant_id} key", tenant=tenant)
    return tenant, raw_key


def delete_tenant(tenant: Tenant) -> None:
    """Delete a tenant with everything it owns: its rows, then (once that is committed) its stored files."""
    tenant_id = tenant.pk  # read now: Django sets the instance's pk to None when it deletes the row
    with transaction.atomic():
        Tenant.objects.filter(pk=tenant_id).delete()
        transaction.on_commit(lambda: delete_quietly(delete_tenant_files, tenant_id))
