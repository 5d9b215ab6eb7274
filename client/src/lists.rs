//! Lists: push elements to the list at a key, read them back in order
//! (`ampstore_common::lists` has the layout).

use ampstore_common::lists::{self, PushId};
use ampstore_common::wire::Call;
use ampstore_common::wire::data::Push;
use ampstore_common::{Error, Key, Version};

use crate::client::Client;

/// How many times [`Client::push`] re-stamps a push that other pushes overtook.
const PUSH_RESTAMPS_MAX: usize = 16;

/// A page of a list: elements in push-id order, and where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub elements: Vec<(PushId, Vec<u8>)>,
    /// Pass as `after` for the next page; `None` when the list has no more elements.
    pub next: Option<PushId>,
}

impl Client {
    /// A fresh push id: this client's clock in ms, its id, its counter.
    pub fn push_id(&self) -> PushId {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let w = self.write_id();
        PushId { ms, client: w.client, n: w.n }
    }

    /// Appends `element` to the list at `key` and returns its push id. Retried until the
    /// call deadline; a retry never adds the element twice.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// client.push("events:42", b"clicked".to_vec()).await?;
    /// let page = client.list("events:42", None, 100).await?;
    /// assert_eq!(page.elements[0].1, b"clicked");
    /// # Ok(()) }
    /// ```
    pub async fn push(&self, key: impl Into<Key>, element: impl Into<Vec<u8>>) -> Result<PushId, Error> {
        let (key, element) = (key.into(), element.into());
        let mut id = self.push_id();
        for _ in 0..PUSH_RESTAMPS_MAX {
            match self.push_with_id(key.clone(), element.clone(), id).await {
                Ok(_) => return Ok(id),
                // Behind the list's last element (another client's clock is ahead): the
                // range refused this id, so it can never land; push above that element.
                Err(Error::Conflict { key: Some(last), .. }) => {
                    let fresh = self.push_id();
                    id = lists::restamp(&last, fresh.ms, fresh.client, fresh.n)
                        .ok_or_else(|| Error::internal(format!("push refused with a non-element key {last}")))?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(format!("push to {key} was overtaken {PUSH_RESTAMPS_MAX} times in a row")))
    }

    /// Appends `element` with a push id the caller chose: pushing the same id again (from
    /// any client, any number of times) leaves one element. A list keeps the order its
    /// pushes took effect in, so an id below the list's last element is refused with
    /// `Error::Conflict` whose `key` is that element (unless this id is already stored).
    /// [`Client::push`] handles that by re-stamping.
    pub async fn push_with_id(
        &self,
        key: impl Into<Key>,
        element: impl Into<Vec<u8>>,
        id: PushId,
    ) -> Result<Version, Error> {
        let key = key.into();
        let op = Push { key: key.clone(), element: element.into(), push_id: id }.into_op();
        op.validate()?;
        let reply = match self.via_collector(&op).await {
            Some(r) => r?,
            None => self.keyed_until(&lists::element_key(&key, id), op, self.deadline()).await?,
        };
        Push::reply(reply)
    }

    /// Up to `limit` elements of the list at `key` after `after` (from the start with
    /// `None`), in push-id order.
    pub async fn list(&self, key: impl Into<Key>, after: Option<PushId>, limit: usize) -> Result<ListPage, Error> {
        let key = key.into();
        lists::validate_list_key(&key)?;
        let (start, end) = lists::bounds(&key, after);
        let page = self.scan_raw(start, Some(end), limit, false).await?;
        let more = page.resume.is_some();
        let elements: Vec<(PushId, Vec<u8>)> = page
            .items
            .into_iter()
            .filter_map(|item| lists::push_id_of(&key, &item.key).map(|id| (id, item.value)))
            .collect();
        let next = if more { elements.last().map(|(id, _)| *id) } else { None };
        Ok(ListPage { elements, next })
    }
}
